"""Where a request's adapter comes from: a name registered at start, or a path in the allow-list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omni.errors import InvalidRequestError
from omni.lora.spec import LoraSpec


@dataclass(frozen=True, slots=True)
class LoraSources:
    modules: dict[str, Path]  # --lora-modules NAME=PATH, paths resolved
    root: Path | None  # --lora-dir, resolved; None: only registered names

    @classmethod
    def of(cls, modules: tuple[tuple[str, str], ...], root: str | None) -> LoraSources:
        return cls(
            {name: Path(path).expanduser().resolve() for name, path in modules},
            None if root is None else Path(root).expanduser().resolve(),
        )

    def path_of(self, spec: LoraSpec) -> Path:
        """The adapter's file or directory; InvalidRequestError when it may not or cannot be read.
        A local_path is resolved (symlinks, ..) before it is checked against --lora-dir."""
        if spec.local_path is None:
            path = self.modules.get(spec.name or "")
            if path is None:
                names = ", ".join(sorted(self.modules)) or "none"
                raise InvalidRequestError(
                    f"lora name {spec.name!r} is not registered (registered: {names}); "
                    "register it with --lora-modules NAME=PATH, or send a local_path",
                    param="lora",
                )
            return path
        if self.root is None:
            raise InvalidRequestError(
                "lora local_path is not accepted here: this server has no --lora-dir; "
                "name an adapter registered with --lora-modules instead",
                param="lora",
            )
        path = (self.root / Path(spec.local_path).expanduser()).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidRequestError(
                f"lora local_path {spec.local_path!r} is outside the server's --lora-dir",
                param="lora",
            )
        if not path.exists():
            raise InvalidRequestError(
                f"lora local_path {spec.local_path!r} does not exist in --lora-dir", param="lora"
            )
        return path


def file_identity(path: Path) -> tuple[str, int, int]:
    """What names one version of an adapter file: a file replaced on disk loads afresh."""
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size
