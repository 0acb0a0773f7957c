"""A tiny 4M-21 job with deterministic random weights: every code path of the pipeline and the node at a
small fraction of the cost, for the tests, the soak and the benchmarks' smoke runs."""

from __future__ import annotations

import torch

from fourm_ros.model import FourM, FourMConfig
from fourm_ros.pipeline.weights import Components, randomize
from fourm_ros.tokenizers.depth_encoder import DepthEncoder, DepthEncoderConfig
from fourm_ros.tokenizers.divae import DiVAEConfig, DiVAEDecoder
from fourm_ros.tokenizers.human_pose import PoseDecoder, PoseTokenizerConfig
from fourm_ros.tokenizers.loading import materialize, official_config
from fourm_ros.tokenizers.semseg import SemsegConfig, SemsegDecoder
from fourm_ros.tokenizers.unet import UNetConfig
from fourm_ros.tokenizers.vit import ViTConfig


def tiny_random_components(
    seed: int = 0, dtype: torch.dtype | None = None, depth_input: bool = False
) -> Components:
    """A complete, tiny set of pipeline components with deterministic random weights: a 1+1-layer 4M-21
    and small tokenizer decoders with the official vocabularies, output sizes and token formats
    (``depth_input``: the model also takes tok_depth@224 inputs, from a tiny depth-tokenizer encoder)."""

    dtype = dtype or torch.float32
    outputs = ("tok_depth@224", "tok_normal@224", "tok_semseg@224", "caption", "human_poses")
    config = FourMConfig(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, domains_out=outputs)
    # Sequence targets condition on their [S_1]; depth_input: the image's depth tokens too.
    inputs = ("rgb@224", "tok_depth@224") if depth_input else ("rgb@224",)
    inputs += ("caption", "human_poses")
    model = FourM(config, inputs, outputs, seed=seed, dtype=dtype).eval().requires_grad_(False)
    unet = UNetConfig(
        model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_downsampling=(4,)
    )

    def tiny(decoder: torch.nn.Module) -> torch.nn.Module:
        return randomize(materialize(decoder, dtype), seed).eval().requires_grad_(False)

    with torch.device("meta"):
        depth = DiVAEDecoder(DiVAEConfig.from_json(official_config("depth"), "depth"), unet)
        normals = DiVAEDecoder(DiVAEConfig.from_json(official_config("normals"), "normals"), unet)
        segmentation = SemsegDecoder(
            SemsegConfig.from_json(official_config("segmentation"), "segmentation"),
            ViTConfig(dim=32, depth=1, num_heads=2),
        )
        pose_config = {**official_config("human_pose"), "latent_dim": 64}
        pose_config.update(enc_type="BottleneckMLP/B_1-Wi_32", dec_type="BottleneckMLP/B_1-Wi_32")
        pose = PoseDecoder(PoseTokenizerConfig.from_dict(pose_config))
        depth_encoder = DepthEncoder(
            DepthEncoderConfig.from_json(official_config("depth"), "depth"),
            ViTConfig(dim=32, depth=1, num_heads=2),
        )
    return Components(
        model=model,
        depth=tiny(depth),
        normals=tiny(normals),
        segmentation=tiny(segmentation),
        human_pose=tiny(pose),
        random_weights=True,
        model_name="tiny test model (random weights)",
        depth_encoder=tiny(depth_encoder) if depth_input else None,
    )
