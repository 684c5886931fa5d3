"""Configurations as JSON: the one ``to_dict / from_dict / save / load / preset`` of every model family
and of the training configuration.

A family's config is a typed dataclass that mixes in :class:`JsonConfig` and names, in the class header,
its family (for messages) and its presets (the classmethods that build them)::

    @dataclass
    class GPTConfig(JsonConfig, family="GPT", presets={"gpt2": "gpt2", "tiny": "tiny"}):
        ...

The JSON is ``dataclasses.asdict`` written with two-space indentation and a final newline, the format of
every ``config.json`` attnkit has written, so old run directories keep loading.

Every family names the shared sizes alike (``d_model, n_heads, n_layers, d_ff, max_len, eps``). Some
families' files were first written under other names (GPT's ``n_embd, n_head, n_layer, block_size,
layer_norm_eps``, GPT-2's own); a config lists them as ``legacy={field: name in the file}``. They are the
boundary's business only: JSON is written under those names (so files stay byte for byte what every
attnkit version wrote and reads) and read under either name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from attnkit.errors import CheckpointError

if TYPE_CHECKING:  # typing.Self is Python >= 3.11; attnkit supports 3.10
    from typing import Self


class JsonConfig:
    """Mixin for a config dataclass. Class keywords: ``family`` (named in errors); ``presets`` (names, or
    a mapping from name to the builder classmethod's name); ``file_name``: when given, ``save``/``load``
    take the directory that holds that file; ``strict``: unknown fields are a CheckpointError (the JSON
    belongs to another family or a newer attnkit) instead of being dropped."""

    family: ClassVar[str]
    presets: ClassVar[dict[str, str]]
    file_name: ClassVar[str | None]
    strict: ClassVar[bool]
    legacy: ClassVar[dict[str, str]]

    def __init_subclass__(
        cls, family: str, presets: Iterable[str] | Mapping[str, str], file_name: str | None = None,
        strict: bool = False, legacy: Mapping[str, str] | None = None, **kw: Any,
    ) -> None:
        super().__init_subclass__(**kw)
        cls.family, cls.file_name, cls.strict = family, file_name, strict
        cls.presets = dict(presets) if isinstance(presets, Mapping) else {name: name for name in presets}
        cls.legacy = dict(legacy or {})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Self:
        """The preset ``name`` with fields overridden, e.g. ``GPTConfig.preset("gpt2", vocab_size=65)``."""
        if name not in cls.presets:
            raise ValueError(f"unknown {cls.family} preset {name!r}; choose one of {sorted(cls.presets)}")
        return getattr(cls, cls.presets[name])(**overrides)

    def to_dict(self) -> dict:
        """The JSON object: every field, in order, under its file name (``legacy``) where it has one."""
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {self.legacy.get(k, k): v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        if not isinstance(d, dict):
            raise CheckpointError(f"a {cls.family} configuration must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        current = {old: new for new, old in cls.legacy.items()}
        d = {current.get(k, k): v for k, v in d.items()}
        unknown = sorted(set(d) - names)
        if unknown and cls.strict:
            raise CheckpointError(f"unknown {cls.family} config fields {unknown}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def _path(cls, path: str | Path) -> Path:
        return Path(path) / cls.file_name if cls.file_name else Path(path)

    def save(self, path: str | Path) -> None:
        self._path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """The config saved at ``path``; CheckpointError if it is missing, not JSON or not a valid config."""
        file = cls._path(path)
        try:
            return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, CheckpointError) as exc:
            raise CheckpointError(f"{file}: not a readable {cls.family} configuration ({exc})") from None
