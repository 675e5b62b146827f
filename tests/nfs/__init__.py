"""Tests on a real NFS export seen through two client mounts (the nfs-rig).

A package, so that its conftest is `nfs.conftest` and never shadows `tests/conftest.py`, from
which every test module imports its helpers as `conftest`.
"""
