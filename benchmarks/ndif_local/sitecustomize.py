"""Shims that let ndif 0.1.2 serve a model from a local folder with nnsight 0.8.1, offline.

Loaded by every server process through PYTHONPATH (Python imports `sitecustomize` at start).
Each shim patches a module right after it is first imported, so processes that never import
nnsight pay nothing:

- ndif's evaluator passes `trust_remote_code=` to `Remotable.describe_checkpoint` and
  `max_tp_size`, which nnsight 0.8.1 does not accept: accept it and drop it.
- nnsight asks the Hub for a repo's canonical id and its parameter count: for a local folder,
  the folder is the id and the count comes from building the architecture on meta (nnsight's
  own fallback for repos that publish none).
"""

import functools
import importlib.abc
import os
import sys


def _drop_trust_remote_code(method):
    @functools.wraps(method)
    def wrapper(cls, *args, trust_remote_code=False, **kwargs):
        return method.__func__(cls, *args, **kwargs)

    return classmethod(wrapper)


def _patch_remotable(module):
    remotable = module.Remotable
    for name in ("describe_checkpoint", "max_tp_size"):
        setattr(remotable, name, _drop_trust_remote_code(getattr(remotable, name)))


def _patch_huggingface(module):
    model = module.HuggingFaceModel
    model_key = model._remoteable_model_key
    count = model._hub_parameter_count

    def local_model_key(self):
        if os.path.isdir(str(self.repo_id)):
            module._ID_CACHE.setdefault(self.repo_id, self.repo_id)
        return model_key(self)

    def local_parameter_count(repo_id, revision):
        return None if os.path.isdir(str(repo_id)) else count(repo_id, revision)

    model._remoteable_model_key = local_model_key
    model._hub_parameter_count = staticmethod(local_parameter_count)


PATCHES = {"nnsight.modeling.mixins.remotable": _patch_remotable, "nnsight.modeling.huggingface": _patch_huggingface}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
