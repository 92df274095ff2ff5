"""The model store's layout, shared by every writer and reader (pipelines/engines push and load).

Keys under the store URL's prefix: `<model>/config.pbtxt`, `<model>/<version>/<files>` and
`<model>/<version>/manifest.json`. The manifest is written last, so a version without one (an upload
in progress or one that crashed) does not exist for any reader. Triton reads the same layout as its
model repository.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
