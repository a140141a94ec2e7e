"""The ``stable-diffusion`` generator: a diffusers text-to-image pipeline as a class-conditional G_s.

The source classes are a list of names (:mod:`ptl_generators.prompts`). Each class ``c`` is
spoken by one or more templates; its **prompt embedding** ``E[c]`` (the text encoder's last
hidden state, ``(L, D)``) is the average over the templates. Conditioning by index feeds ``E[c]``
where a pipeline's ``prompt_embeds`` go (the UNet's cross-attention), and a probability row ``p``
feeds the p-weighted mix ``sum_c p_c E[c]`` there — PCS soft conditioning, the text-to-image
analogue of ``p @ E.weight`` for a class-embedding table. A one-hot row therefore gives exactly
the image of its index. Classifier-free guidance uses the negative (by default the empty)
prompt's embedding, as diffusers' pipelines do, when ``guidance_scale > 1``.

The embeddings are computed once, in float32, and stored in ``<ptl cache>/prompt-embeddings/``
(a 1000-class ImageNet table is about 240 MB for SD 1.5); a later build reads them and loads no
text encoder. Sampling is diffusers'
own loop written out: the chosen scheduler (the pipeline's, or another one from the same config
for few-step sampling), ``scale_model_input``, the UNet, guidance, ``scheduler.step``, the VAE.
Given ``z`` and a deterministic scheduler it is a pure function; stochastic schedulers (ancestral
Euler, DDIM with eta > 0) draw their noise from ``generator``, so a seeded generator reproduces
the samples on one device.

SDXL-style pipelines (two text encoders, ``StableDiffusionXLPipeline``, SDXL-Turbo) work the same
way with diffusers' SDXL conventions: the token embedding is both encoders' penultimate hidden
states side by side, the **pooled** embedding (the second encoder's projected text embedding)
is mixed with the same ``p`` and goes where ``pooled_prompt_embeds`` go, the size/crop
conditioning is ``(H, W, 0, 0, H, W)``, and the empty negative prompt is all zeros when the
pipeline says so (``force_zeros_for_empty_prompt``); in float16 the VAE decodes in float32.

Models are built from their configs and loaded strictly (missing weights are an error, never a
silent random init); hub ids come from the Hugging Face cache, or are downloaded when online.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptl_cli.errors import UserError
from ptl_generators import prompts as P
from ptl_generators import weights as W
from ptl_generators.conditioning import as_probs

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
    "lcm": "LCMScheduler",
}
#: What a hub snapshot of a pipeline needs: configs, tokenizer files and the plain weights files
#: (not the fp16/ema/non-ema variants and single-file checkpoints many repositories also hold).
HUB_PATTERNS = [
    "model_index.json",
    "*/*.json",
    "tokenizer*/*.txt",
    "*/diffusion_pytorch_model.safetensors",
    "*/diffusion_pytorch_model.safetensors.index.json",
    "*/diffusion_pytorch_model-*.safetensors",
    "text_encoder*/model.safetensors",
    "text_encoder*/model.safetensors.index.json",
    "text_encoder*/model-*.safetensors",
]


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA (what these pipelines are run in), float32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


@dataclass
class PromptTable:
    """The classes' prompt embeddings and the negative prompt's, as a pipeline consumes them.

    ``tokens (K, L, D)`` go where ``prompt_embeds`` go; ``pooled (K, P)`` (SDXL only, else None)
    where ``pooled_prompt_embeds`` go; ``negative``/``negative_pooled`` have one row.
    """

    tokens: torch.Tensor
    negative: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    def to(self, device: torch.device) -> PromptTable:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, torch.float32)

        return PromptTable(
            move(self.tokens), move(self.negative), move(self.pooled), move(self.negative_pooled)
        )


def mix(y: torch.Tensor, table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows of ``table`` for class indices ``(B,)``; the p-weighted sum of rows for ``(B, K)`` rows."""
    y = torch.as_tensor(y)
    probs = as_probs(y, table.shape[0], device)  # checks ranges and shapes
    if not y.is_floating_point():
        return table[probs.argmax(dim=1)]
    return torch.einsum("bk,k...->b...", probs, table)


class TextToImageGenerator:
    """Samples of a text-to-image pipeline conditioned on (mixes of) class prompt embeddings."""

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler_config: dict[str, Any],
        prompts: PromptTable,
        class_names: Sequence[str],
        device: torch.device,
        steps: int,
        guidance_scale: float,
        scheduler: str,
        timestep_spacing: str,
        eta: float,
        image_size: int,
        dtype: torch.dtype,
        digest: str,
    ) -> None:
        self.unet = (unet.to(device) if dtype == torch.float32 else unet.to(device, dtype)).eval()
        self.xl = prompts.pooled is not None
        # diffusers' SDXL pipeline decodes in float32 when its VAE overflows in float16
        upcast = self.xl and dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        self.vae_dtype = torch.float32 if upcast else dtype
        self.vae = (vae.to(device) if self.vae_dtype == torch.float32 else vae.to(device, dtype)).eval()
        self.prompts = prompts.to(device)
        self.embeddings = self.prompts.tokens  # (K, L, D)
        self.negative = self.prompts.negative  # (1, L, D)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.classes_are_names = True  # its classes are the names it speaks: G_s/C_s must agree on them
        self.device = device
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.eta = eta
        self.dtype = dtype
        self.scheduler_name = scheduler
        self.scheduler_config = dict(scheduler_config)
        if timestep_spacing != "default":
            self.scheduler_config["timestep_spacing"] = timestep_spacing
        self.scheduler_class = scheduler_class(scheduler, scheduler_config)
        self.timestep_spacing = timestep_spacing
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if image_size % factor:
            raise UserError(f"image_size {image_size} must be a multiple of the VAE's factor {factor}")
        self.image_size = image_size
        self.channels = int(self.vae.config.out_channels)
        self.latent_shape = (int(self.unet.config.in_channels), image_size // factor, image_size // factor)
        self.latent_dim = self.latent_shape[0] * self.latent_shape[1] * self.latent_shape[2]
        self._digest = digest
        if self.xl:
            self._check_added_embedding()

    def _check_added_embedding(self) -> None:
        """SDXL's UNet adds an embedding of (pooled text, 6 size/crop numbers): their sizes must fit."""
        expected = getattr(getattr(self.unet, "add_embedding", None), "linear_1", None)
        time_dim = getattr(self.unet.config, "addition_time_embed_dim", None)
        if expected is None or time_dim is None:
            raise UserError("this pipeline has two text encoders but its UNet takes no pooled text embedding")
        given = int(time_dim) * 6 + int(self.prompts.pooled.shape[-1])
        if given != expected.in_features:
            raise UserError(
                f"the UNet's added embedding takes {expected.in_features} numbers, but the pooled text "
                f"embedding and the size conditioning give {given}; the pipeline's parts do not fit"
            )

    @property
    def id(self) -> str:
        """Weights and prompts digest plus every setting that changes the samples."""
        return (
            f"stable-diffusion-{self._digest}-{self.scheduler_name}-{self.timestep_spacing}"
            f"-s{self.steps}-g{self.guidance_scale:g}-e{self.eta:g}-{self.image_size}"
        )

    @property
    def guided(self) -> bool:
        """diffusers' rule: guidance above 1, unless the UNet takes the guidance as an input (LCM)."""
        return self.guidance_scale > 1.0 and getattr(self.unet.config, "time_cond_proj_dim", None) is None

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """``prompt_embeds`` for class indices ``(B,)`` or probability rows ``(B, K)``: ``(B, L, D)``.

        Indices look their row up; a probability row is the p-weighted sum of the rows (float32).
        """
        return mix(y, self.prompts.tokens, self.device)

    def condition_pooled(self, y: torch.Tensor) -> torch.Tensor | None:
        """``pooled_prompt_embeds`` (SDXL), mixed with the same rows; None for SD 1.x/2.x."""
        return None if self.prompts.pooled is None else mix(y, self.prompts.pooled, self.device)

    def _added(self, pooled: torch.Tensor | None, batch: int) -> dict[str, torch.Tensor] | None:
        """SDXL's ``added_cond_kwargs``: pooled text (negative first under guidance) and size ids."""
        if pooled is None:
            return None
        side = self.image_size
        ids = torch.tensor([[side, side, 0, 0, side, side]], device=self.device, dtype=self.dtype)
        text = pooled.to(self.dtype)
        if self.guided:
            text = torch.cat([self.prompts.negative_pooled.to(self.dtype).expand(batch, -1), text])
        return {"text_embeds": text, "time_ids": ids.repeat(text.shape[0], 1)}

    def noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.randn((batch, *self.latent_shape), generator=generator, device=gen_device).to(
            self.device
        )

    def _step_kwargs(self, scheduler: Any, generator: torch.Generator | None) -> dict[str, Any]:
        """What diffusers' pipelines pass to ``step``: ``eta`` and ``generator`` where accepted."""
        accepted = set(inspect.signature(scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = self.eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    @torch.no_grad()
    def sample(
        self, y: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1]; ``z`` is the initial latent noise ``(B, *latent_shape)``."""
        cond, pooled = self.condition(y), self.condition_pooled(y)
        batch = cond.shape[0]
        if z is None:
            z = self.noise(batch, generator)
        elif tuple(z.shape) != (batch, *self.latent_shape):
            raise UserError(f"z must have shape {(batch, *self.latent_shape)}, got {tuple(z.shape)}")
        scheduler = self.scheduler_class.from_config(self.scheduler_config)
        scheduler.set_timesteps(self.steps, device=self.device)
        step_kwargs = self._step_kwargs(scheduler, generator)
        text = cond.to(self.dtype)
        if self.guided:
            text = torch.cat([self.negative.to(self.dtype).expand(batch, -1, -1), text])
        added = self._added(pooled, batch)
        latents = z.to(self.device, self.dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x_in = torch.cat([latents, latents]) if self.guided else latents
            x_in = scheduler.scale_model_input(x_in, t)
            eps = self.unet(x_in, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
            if self.guided:
                uncond, conditioned = eps.chunk(2)
                eps = uncond + self.guidance_scale * (conditioned - uncond)
            latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        images = self.vae.decode(self._unscaled(latents.to(self.vae_dtype))).sample
        return images.float().div(2).add_(0.5).clamp_(0, 1)

    def _unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's latent normalization undone (per-channel mean/std where its config has them)."""
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            view = (1, -1, 1, 1)
            mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(view)
            std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(view)
            return latents * std / config.scaling_factor + mean
        latents = latents / config.scaling_factor
        shift = getattr(config, "shift_factor", None)
        return latents + shift if shift else latents


# -- loading -----------------------------------------------------------------------------------------
def scheduler_class(name: str, config: dict[str, Any]) -> Any:
    """The diffusers scheduler class ``name`` means (``default``: the pipeline's own)."""
    import diffusers

    cls_name = _SCHEDULERS.get(name) or str(config.get("_class_name") or "DDIMScheduler")
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise UserError(f"scheduler {cls_name!r} of this pipeline is not a diffusers scheduler")
    return cls


def _load_diffusers_model(directory: Path, expect: str) -> tuple[nn.Module, list[Path]]:
    """A diffusers model of class ``expect`` from ``config.json`` + weights, loaded strictly."""
    import diffusers

    from ptl_generators.diffusion import _model_weights, _renamed_legacy_keys

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"{directory} is not a diffusers model directory (no config.json)")
    config = json.loads(config_path.read_text())
    name = config.get("_class_name", "")
    if name != expect:
        raise UserError(f"{config_path}: model class {name!r} is not supported here (expected {expect})")
    cls = getattr(diffusers, expect)
    known = set(cls.extract_init_dict(config)[0])
    model = cls.from_config({k: v for k, v in config.items() if k in known})
    files = _model_weights(directory)
    paths = files if isinstance(files, list) else [files]
    state: dict[str, Any] = {}
    for path in paths:
        state.update(W.read_state_dict(path))
    W.strict_load(model, _renamed_legacy_keys(model, state), str(directory))
    return model, [config_path, *paths]


def load_transformers(cls: Any, directory: Path, what: str) -> nn.Module:
    """A transformers model via ``from_pretrained``, refused when any weight is missing or mis-shaped.

    transformers maps the key names of every release's checkpoints (``text_model.`` prefixes,
    ``position_ids`` buffers) itself; ptl keeps its rule that nothing loads partly random.
    """
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(str(directory), dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {directory} cannot be loaded ({str(exc).splitlines()[0][:200]})") from None
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    problems = []
    for label in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        items = sorted(str(k) for k in info.get(label) or ())
        if items:
            problems.append(f"{label.replace('_', ' ')}: {', '.join(items[:4])}")
    if problems:
        raise UserError(f"{what} {directory} does not match its config ({'; '.join(problems)})")
    return model.eval()


def load_tokenizer(directory: Path, what: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{what} {directory} cannot be loaded ({str(exc).splitlines()[0][:200]})") from None


def pipeline_directory(weights: str) -> Path:
    """A local pipeline directory: ``weights`` itself, or its hub snapshot (cache first)."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return path
    if weights.count("/") == 1 and not weights.startswith((".", "/", "~")):
        return W.hub_snapshot(
            weights,
            "text-to-image weights",
            allow_patterns=HUB_PATTERNS,
            fix="pass weights=DIR holding the diffusers pipeline directory",
        )
    raise UserError(
        f"text-to-image weights {weights!r}: no such directory, and not a hub id; give a diffusers "
        "pipeline directory or a hub id like stable-diffusion-v1-5/stable-diffusion-v1-5"
    )


def _check_layout(directory: Path) -> dict[str, Any]:
    """The pipeline's ``model_index.json``, once its parts are known to be there."""
    index = directory / "model_index.json"
    if not index.is_file():
        raise UserError(f"{directory} is not a diffusers pipeline directory (no model_index.json)")
    parts = json.loads(index.read_text())
    needed = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    if (parts.get("text_encoder_2") or [None])[0]:
        needed += ["text_encoder_2", "tokenizer_2"]
    missing = [p for p in needed if not (directory / p).is_dir()]
    if missing:
        raise UserError(f"{directory} lacks the pipeline parts {', '.join(missing)}")
    return parts


@dataclass
class TextEncoders:
    """One CLIP text encoder and its tokenizer (SD 1.x/2.x), or two (SDXL)."""

    encoders: list[tuple[nn.Module, Any]]

    @property
    def xl(self) -> bool:
        return len(self.encoders) == 2

    @torch.no_grad()
    def encode(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings ``(N, L, D)`` and pooled ones ``(N, P)`` (SDXL; else None) of ``texts``.

        SD 1.x/2.x: the encoder's last hidden state (with its attention mask where its config asks
        for one). SDXL: both encoders' penultimate hidden states side by side, and the second
        encoder's projected text embedding as the pooled one — diffusers' conventions.
        """
        tokens_out, pooled_out = [], []
        for start in range(0, len(texts), 64):
            chunk = list(texts[start : start + 64])
            hidden, pooled = [], None
            for model, tokenizer in self.encoders:
                ids = tokenizer(
                    chunk,
                    padding="max_length",
                    max_length=int(tokenizer.model_max_length),
                    truncation=True,
                    return_tensors="pt",
                )
                if not self.xl:
                    use_mask = bool(getattr(model.config, "use_attention_mask", False))
                    mask = ids.attention_mask.to(device) if use_mask else None
                    hidden.append(model(ids.input_ids.to(device), attention_mask=mask)[0])
                    continue
                out = model(ids.input_ids.to(device), output_hidden_states=True)
                if out[0].ndim == 2:
                    pooled = out[0]
                hidden.append(out.hidden_states[-2])
            tokens_out.append(torch.cat(hidden, dim=-1).float())
            if pooled is not None:
                pooled_out.append(pooled.float())
        return torch.cat(tokens_out), torch.cat(pooled_out) if pooled_out else None

    def table(
        self,
        names: Sequence[str],
        templates: Sequence[str],
        negative_prompt: str,
        zero_empty_negative: bool,
        device: torch.device,
    ) -> PromptTable:
        """Every class's prompt embeddings, averaged over the templates, and the negative prompt's."""
        spoken = [p for per_class in P.prompts(names, templates) for p in per_class]
        tokens, pooled = self.encode(spoken, device)
        shape = (len(names), len(templates))
        tokens = tokens.view(*shape, *tokens.shape[1:]).mean(dim=1)
        if pooled is not None:
            pooled = pooled.view(*shape, pooled.shape[-1]).mean(dim=1)
        negative, negative_pooled = self.encode([negative_prompt], device)
        if self.xl and zero_empty_negative and not negative_prompt:
            negative = torch.zeros_like(negative)
            negative_pooled = torch.zeros_like(negative_pooled)
        return PromptTable(tokens, negative, pooled, negative_pooled)


def text_encoders(directory: Path, parts: dict[str, Any], device: torch.device) -> TextEncoders:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    encoders = [
        (
            load_transformers(CLIPTextModel, directory / "text_encoder", "text encoder").to(device),
            load_tokenizer(directory / "tokenizer", "tokenizer"),
        )
    ]
    if (parts.get("text_encoder_2") or [None])[0]:
        model = load_transformers(CLIPTextModelWithProjection, directory / "text_encoder_2", "text encoder 2")
        encoders.append((model.to(device), load_tokenizer(directory / "tokenizer_2", "tokenizer 2")))
    return TextEncoders(encoders)


_TABLE_KEYS = ("tokens", "negative", "pooled", "negative_pooled")


def cached_table(
    directory: Path,
    parts: dict[str, Any],
    text_files: list[Path],
    names: Sequence[str],
    templates: Sequence[str],
    negative_prompt: str,
    device: torch.device,
) -> PromptTable:
    """The prompt table from ``<ptl cache>/prompt-embeddings/``, else computed and stored there.

    Keyed by a digest of the text encoders' and tokenizers' files, the names, templates and
    negative prompt: a later run (another seed, a resumed stage) loads no text encoder at all.
    Stored in float32, so a cached table is bit for bit the computed one.
    """
    from ptl_cli.data.locations import cache_dir

    zero_negative = bool(parts.get("force_zeros_for_empty_prompt", True))
    what = json.dumps([list(names), list(templates), negative_prompt, zero_negative, 1])
    key = W.digest(text_files, extra=what)
    path = cache_dir() / "prompt-embeddings" / f"{key}.safetensors"
    if path.is_file():
        try:
            state, _ = W.read_single(path, "prompt-embeddings")
            return PromptTable(*(state.get(k) for k in _TABLE_KEYS)).to(device)
        except UserError:
            pass  # a damaged cache file is recomputed and replaced
    encoders = text_encoders(directory, parts, device)
    table = encoders.table(names, templates, negative_prompt, zero_negative, device)
    tensors = {k: getattr(table, k) for k in _TABLE_KEYS if getattr(table, k) is not None}
    with contextlib.suppress(OSError):  # a read-only cache only costs the recomputation next time
        W.save_single(path, tensors, {"ptl_format": "prompt-embeddings", "classes": len(names)})
    return table


def build(
    device: Any = "cpu",
    weights: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
    classes: str | list[str] = "imagenet",
    templates: list[str] | None = None,
    negative_prompt: str = "",
    steps: int = 25,
    guidance_scale: float = 7.5,
    scheduler: str = "default",
    timestep_spacing: str = "default",
    eta: float = 0.0,
    image_size: int | None = None,
    dtype: str = "auto",
) -> TextToImageGenerator:
    """The ``stable-diffusion`` factory (see the module docstring)."""
    P.require("transformers", "text-to-image", "the stable-diffusion generator")
    device = torch.device(device)
    templates = list(templates or P.DEFAULT_TEMPLATES)
    names = P.class_names(classes)
    P.prompts(names[:1], templates)  # template errors before anything loads
    directory = pipeline_directory(weights)
    parts = _check_layout(directory)
    unet, unet_files = _load_diffusers_model(directory / "unet", "UNet2DConditionModel")
    vae, vae_files = _load_diffusers_model(directory / "vae", "AutoencoderKL")
    text_files = [
        p
        for sub in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
        if (directory / sub).is_dir()
        for p in sorted((directory / sub).iterdir())
        if p.is_file() and p.suffix in (".safetensors", ".json", ".txt")
    ]
    table = cached_table(directory, parts, text_files, names, templates, negative_prompt, device)
    config_path = directory / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    configs = [p for p in (config_path, directory / "model_index.json") if p.is_file()]
    digest = W.digest(
        [*unet_files, *vae_files, *text_files, *configs],
        extra=P.text_digest(names, templates, negative_prompt),
    )
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    sample = unet.config.sample_size
    native = int(sample if isinstance(sample, int) else sample[0]) * vae_factor
    return TextToImageGenerator(
        unet,
        vae,
        scheduler_config,
        table,
        names,
        device,
        steps,
        guidance_scale,
        scheduler,
        timestep_spacing,
        eta,
        image_size or native,
        resolve_dtype(dtype, device),
        digest,
    )
