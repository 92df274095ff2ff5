"""Triton python-backend model that runs `model.onnx` (next to this file) with onnxruntime on CPU.

gpufleet ships this file into each model version it packages for CPU serving (the local fleet has
no onnxruntime or TensorRT backend). Requests of one dynamic batch are stacked into one run.

A package built with `engine build --inject-*` also holds `fault.json` (pipelines/engines/fault.py
writes it): this runner then fails or delays execute() calls on purpose, as a regressed version would.
Without that file it does nothing of the kind.
"""

import json
import os
import random
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

FAULT_FILE = "fault.json"


class InjectedFault:
    """fault.json applied to one model instance's execute() calls, in the order they come."""

    def __init__(self, fault: dict[str, Any], instance: str) -> None:
        self.error_rate = float(fault["error_rate"])
        self.latency_s = float(fault["latency_ms"]) / 1000
        self.slow_share = float(fault["slow_share"])
        self.after_calls = int(fault["after_calls"])
        # A str seed is hashed with SHA-512 by random.Random: the same sequence in every process.
        self.random = random.Random(f"{fault['seed']}:{instance}")
        self.calls = 0

    def apply(self) -> None:
        self.calls += 1
        if self.calls <= self.after_calls:
            return
        # Both draws every call, so the error sequence does not depend on the latency settings.
        slow, fails = self.random.random() < self.slow_share, self.random.random() < self.error_rate
        if slow and self.latency_s:
            time.sleep(self.latency_s)
        if fails:
            # Raised, not InferenceResponse(error=...): Triton counts only a raise as a failed request.
            raise RuntimeError(f"injected fault ({FAULT_FILE}): call {self.calls} fails")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # replicas share few cores; one thread each avoids thrashing
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.fault = None
        fault_path = os.path.join(version_dir, FAULT_FILE)
        if os.path.isfile(fault_path):
            with open(fault_path, encoding="utf-8") as f:
                self.fault = InjectedFault(json.load(f), args["model_instance_name"])

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.fault is not None:
            self.fault.apply()
        batches = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names}
            for r in requests
        ]
        sizes = [len(b[self.input_names[0]]) for b in batches]
        feed = {name: np.concatenate([b[name] for b in batches]) for name in self.input_names}
        results = self.session.run(self.output_names, feed)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start : start + size]))
                for name, result in zip(self.output_names, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
