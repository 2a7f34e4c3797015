"""Input-transformation defenses: JPEG, pixel deflection, R-CAM, wavelet denoising.

A defense is `defense(images, key) -> images` on [B, H, W, C] images in [0, 1]
(bind its settings with functools.partial); `jaxcomp.attacks.bpda` / `eot` /
`defended` turn one into a model for adaptive attacks. `DEFENSE_STAGES` names
the stages the robustness runner composes (`defenses.stages`).
"""

from jaxcomp.defenses.combined import pd_rcam_dwt
from jaxcomp.defenses.ensemble import majority_vote
from jaxcomp.defenses.jpeg import jpeg_defense
from jaxcomp.defenses.pixel_deflection import pixel_deflection
from jaxcomp.defenses.rcam import find_head_kernel, rcam_from_model, robust_cam
from jaxcomp.defenses.stages import DEFENSE_STAGES, Stage
from jaxcomp.defenses.wavelet import denoise_wavelet

__all__ = ["DEFENSE_STAGES", "Stage", "denoise_wavelet", "find_head_kernel", "jpeg_defense", "majority_vote", "pd_rcam_dwt",
           "pixel_deflection", "rcam_from_model", "robust_cam"]
