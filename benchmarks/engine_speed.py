"""Inference throughput of one model three ways on one GPU, in one run: PyTorch eager, onnxruntime (CUDA
execution provider) and the TensorRT FP16 plan `gpufleet engine build` makes (pipelines/engines/
tensorrt_build.build_plan, the product's own build). Batch 1 and batch 32; printed as ratios to eager.

The model is defined here (a small pre-norm transformer encoder, random weights, nothing downloaded),
exported to ONNX with torch.onnx.export, then built. Inputs and outputs stay on the GPU for all three
(torch tensors; TensorRT reads their device pointers), so the figures compare the runtimes, not copies.

GPU only: needs an NVIDIA GPU, torch with CUDA, onnxruntime-gpu and tensorrt. Without them it prints
what is missing and exits 0 (it is not part of `make bench`, which must run anywhere).

    .venv/bin/python benchmarks/engine_speed.py [--seconds 3] [--seq 64] [--width 512] [--layers 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCHES = (1, 32)


def missing() -> str | None:
    for module, what in (("torch", "torch"), ("onnxruntime", "onnxruntime-gpu"), ("tensorrt", "tensorrt")):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed"
    import onnxruntime as ort
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


def make_model(width: int, layers: int) -> Any:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=width, nhead=8, dim_feedforward=4 * width, batch_first=True, norm_first=True
    )
    encoder = torch.nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
    return encoder.eval().cuda()


def export_onnx(model: Any, seq: int, width: int) -> bytes:
    import torch

    buffer = io.BytesIO()
    example = torch.randn(1, seq, width, device="cuda")
    torch.onnx.export(
        model,
        (example,),
        buffer,
        input_names=["INPUT"],
        output_names=["OUTPUT"],
        dynamic_axes={"INPUT": {0: "batch"}, "OUTPUT": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()


def spec_for(seq: int, width: int) -> Any:
    """The model's spec as the build reads it: [seq, width] in and out, batch up to 32.

    Parsed with the builtin source and 1-D dims (the only kind builtin:mlp accepts), then given the
    encoder's 2-D dims: build_plan reads the signature and batch size, never the source."""
    from gpufleet.spec import parse_fleet

    fleet = f"""
name: bench
clusters: [{{name: local-a, cloud: local, wave: 1}}]
model_store: {{bucket: engine-speed}}
models:
  - name: encoder
    source: builtin:mlp
    inputs: [{{name: INPUT, dtype: FP32, dims: [{width}]}}]
    outputs: [{{name: OUTPUT, dtype: FP32, dims: [{width}]}}]
    triton: {{max_batch_size: {max(BATCHES)}}}
"""
    model = parse_fleet(fleet).model("encoder")
    shape = [seq, width]
    return model.model_copy(
        update={
            "inputs": [t.model_copy(update={"dims": shape}) for t in model.inputs],
            "outputs": [t.model_copy(update={"dims": shape}) for t in model.outputs],
        }
    )


def throughput(run: Callable[[], None], batch: int, seconds: float) -> float:
    import torch

    for _ in range(10):
        run()
    torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            run()
        torch.cuda.synchronize()
        done += 10
    return done * batch / (time.perf_counter() - start)


def eager_runner(model: Any, x: Any) -> Callable[[], None]:
    import torch

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def onnxruntime_runner(onnx_bytes: bytes, x: Any) -> Callable[[], None]:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(onnx_bytes, providers=["CUDAExecutionProvider"])
    out = torch.empty_like(x)
    binding = session.io_binding()
    binding.bind_input("INPUT", "cuda", 0, "float32", list(x.shape), x.data_ptr())
    binding.bind_output("OUTPUT", "cuda", 0, "float32", list(out.shape), out.data_ptr())

    def run() -> None:
        session.run_with_iobinding(binding)

    return run


def tensorrt_runner(plan: bytes, x: Any) -> Callable[[], None]:
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    context.set_input_shape("INPUT", tuple(x.shape))
    out = torch.empty_like(x)
    context.set_tensor_address("INPUT", x.data_ptr())
    context.set_tensor_address("OUTPUT", out.data_ptr())
    stream = torch.cuda.current_stream().cuda_stream

    def run() -> None:
        context.execute_async_v3(stream)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per runtime and batch")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    reason = missing()
    if reason:
        print(f"engine_speed: skipped: {reason} (GPU-only benchmark)")
        return 0

    import torch

    from pipelines.engines.tensorrt_build import GpuBuildOptions, build_plan, detect_gpu

    found = detect_gpu()
    if found is None:
        print("engine_speed: skipped: the CUDA driver library reports no GPU")
        return 0
    gpu = found[0]
    arch = "sm" + gpu.compute_capability.replace(".", "")
    model = make_model(args.width, args.layers)
    onnx_bytes = export_onnx(model, args.seq, args.width)
    started = time.perf_counter()
    built = build_plan(
        spec_for(args.seq, args.width), onnx_bytes, GpuBuildOptions(target=arch, precision="fp16")
    )
    build_s = time.perf_counter() - started
    print(
        f"GPU {gpu.name} ({gpu.compute_capability}), TensorRT {built.runtime_versions.tensorrt}, "
        f"torch {torch.__version__}; encoder {args.layers} layers x {args.width} wide, seq {args.seq}; "
        f"plan built in {build_s:.1f} s ({len(built.plan) / 2**20:.1f} MiB)"
    )
    for batch in BATCHES:
        x = torch.randn(batch, args.seq, args.width, device="cuda")
        rates = {
            "pytorch eager": throughput(eager_runner(model, x), batch, args.seconds),
            "onnxruntime cuda": throughput(onnxruntime_runner(onnx_bytes, x), batch, args.seconds),
            "tensorrt fp16": throughput(tensorrt_runner(built.plan, x), batch, args.seconds),
        }
        eager = rates["pytorch eager"]
        for name, rate in rates.items():
            print(f"batch {batch:>2} {name:<17} {rate:>10.0f} samples/s   ratio vs eager: {rate / eager:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
