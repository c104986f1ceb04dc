"""The immutable, content-addressed artifact store: import it from here.

``ArtifactStore(home)`` is the local store (ml/store_local.py: a version is published by an atomic
directory rename) or, for an ``s3://bucket/prefix`` home, the object store (ml/store_object.py: files
uploaded first, ``manifest.json`` last and create-only); what a version is and ``put``, the part both
share, live in ml/store_base.py. Every version a step reads or reuses is verified against its
manifest first. Step by step: DESIGN.md ("Life of one materialization", "Storage", "Integrity and
leftovers"); layouts: ml/FORMATS.md.
"""

from __future__ import annotations

from ml.store_base import (CORRUPT, MANIFEST, ArtifactStore, BuildResult, CorruptVersionError, StoredVersion, _rmtree,
                           compute_fingerprint, content_version, describe_problem, list_files, verify_tree)
from ml.store_local import LocalArtifactStore
from ml.store_object import LEASES, ObjectArtifactStore

__all__ = [
    "CORRUPT", "LEASES", "MANIFEST", "ArtifactStore", "BuildResult", "CorruptVersionError", "LocalArtifactStore",
    "ObjectArtifactStore", "StoredVersion", "_rmtree", "compute_fingerprint", "content_version", "describe_problem",
    "list_files", "verify_tree",
]
