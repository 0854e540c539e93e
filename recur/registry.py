"""Things registered by name (mixers, op families, tasks, recipes, benchmarks, cells), with
one way to look them up and one "did you mean" when a name is wrong."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar, overload

T = TypeVar("T")

__all__ = ["Registry", "did_you_mean"]


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """"; did you mean 'a', 'b'?" for the options close to `name`, or ""."""
    close = difflib.get_close_matches(str(name), list(options), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


class Registry(Mapping[str, T], Generic[T]):
    """A name -> T mapping that entries join with `register` and that explains a miss.

    `registry[name]` raises a `KeyError` (a `ValueError` too, so either can be caught) that
    names the kind, the unknown name, close matches and every known name.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name, entry=None):
        """`registry.register("gla", entry)`, or `@registry.register("gla")` on a class or
        function. A name registered twice with different entries is an error."""

        def add(entry: T) -> T:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a {self.kind} name must be a non-empty string; got {name!r}")
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = entry
            return entry

        return add if entry is None else add(entry)

    def named_class(self, name: str, base: type | None = None) -> Callable[[type], type]:
        """A class decorator: registers the class as `name` (a subclass of `base`, when
        given) and sets its `name` attribute, once the registration has succeeded."""

        def decorate(cls: type) -> type:
            if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"only {base.__name__} subclasses can be registered as a {self.kind}; got {cls!r}")
            self.register(name, cls)
            cls.name = name
            return cls

        return decorate

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)} Known: {sorted(self._entries)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


class UnknownName(KeyError, ValueError):
    """A name no entry of a registry has."""

    def __str__(self) -> str:
        # KeyError would print the message with quotes around it
        return str(self.args[0])
