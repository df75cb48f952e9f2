"""An ndif model actor that serves on the CPU.

ndif 0.1.2's `ModelActor` loads the weights onto an assigned GPU (`device=<gpu id>`), sets a
per-process CUDA memory fraction, checks that every tensor landed on CUDA, and synchronizes
CUDA after every request. This one keeps everything else (the request handling, timeouts,
results through redis or the object store) and loads onto the CPU.
"""

import gc

import ray
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel


class CPUModelDeployment(BaseModelDeployment):
    CACHEABLE = False  # parking HOT->WARM moves weights GPU->CPU; here they are on the CPU already

    def load_from_disk(self) -> HuggingFaceModel:
        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name, **self.kwargs)
        model._module.requires_grad_(False)
        return model

    async def to_cache(self) -> None:
        await self.cancel()
        self.cached = True

    def from_cache(self, gpu_mem_bytes_by_id) -> None:
        self.gpu_mem_bytes_by_id = gpu_mem_bytes_by_id
        self.cached = False

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


CPUModelActor = ray.remote(num_cpus=1, max_restarts=-1)(CPUModelDeployment)
