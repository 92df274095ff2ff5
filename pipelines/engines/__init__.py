"""Engines: build a model's serving package (build), describe it (metadata), publish it (push).

Package folder (what `gpufleet engine build` writes; default `<home>/engines/<model>/<target>/`,
home = `.gpufleet`): the files of one Triton model version plus `engine.json` (metadata.py):

- target `cpu`: `model.onnx` + `model.py` (the python-backend runner that serves it with onnxruntime);
- target `smXY` (GPU, tensorrt_build.py): `model.plan`, a TensorRT engine.

Every file in the folder is part of the version (hidden files excepted), so extra files a model needs
travel with it. Push (push.py) puts a package into the model store as a new version; the store
layout it writes, relative to the store URL's prefix:

    <model>/<N>/.reservation.json   claims number N (conditional create, kept: it says who pushed N)
    <model>/<N>/<file>              every package file, engine.json included
    <model>/config.pbtxt            Triton's config, pinned to version N
    <model>/<N>/manifest.json       written LAST: sha256 + size of every file, engine metadata, lineage

A version without `manifest.json` does not exist for any reader (gpufleet/store.py's `versions()`).
"""
