"""The wire between the grader and a submission's process: length-prefixed `torch.save` payloads over pipes.

Only plain data crosses: tensors, and a *template* made of dicts, lists, str, int, float, bool and None that
says where each tensor goes. The grader reads the submission's replies with `torch.load(weights_only=True)`,
which rebuilds tensors and those containers and nothing else (no class of the submission's is ever
unpickled), then checks the template against the grammar below before building anything from it:

    value := {"T": i}                 the i-th tensor of the message's `tensors` list (each used once)
           | {"tuple": [value, ...]} | {"list": [value, ...]}
           | None | bool | int | float
           | {"rejected": "TypeName"}   what the submission's side could not send as plain data

A message is at most MAX_MESSAGE bytes; its tensors must be plain dense `torch.Tensor`s.
"""

from __future__ import annotations

import io
import os
import select
import struct
import time
from typing import Any, Callable

import torch

MAX_MESSAGE = 256 * 2**20
MAX_DEPTH = 16
_HEADER = struct.Struct("<Q")


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


class Timeout(Exception):
    """The deadline passed while waiting for the other side."""


class Closed(Exception):
    """The other side closed its end (its process ended)."""


# ---------------------------------------------------------------------------------------------- framing


def dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """Plain data only: anything but tensors and builtin containers/scalars raises ProtocolError."""
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location=None)
    except Exception as exc:  # an unpickling error, a truncated zip, a forbidden global
        raise ProtocolError(f"not a plain-data payload ({type(exc).__name__}: {str(exc)[:200]})") from None


Wait = Callable[[float], None]  # called with the seconds it may block for; raises to stop waiting


def _wait_fd(fd: int, for_write: bool, deadline: float | None, tick: Wait | None) -> None:
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise Timeout()
        step = 0.25 if remaining is None else min(0.25, remaining)
        r, w, _ = select.select([] if for_write else [fd], [fd] if for_write else [], [], step)
        if r or w:
            return
        if tick is not None:
            tick(step)


def write_message(fd: int, obj: Any, deadline: float | None = None, tick: Wait | None = None) -> None:
    """Send one message; with a deadline the fd must be non-blocking (a stuck reader cannot block us)."""
    payload = dumps(obj)
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        if deadline is not None:
            _wait_fd(fd, True, deadline, tick)
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        except (BrokenPipeError, OSError) as exc:
            raise Closed(str(exc)) from None
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None, tick: Wait | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None or tick is not None:
            _wait_fd(fd, False, deadline, tick)
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise Closed("end of stream")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None, tick: Wait | None = None) -> Any:
    (size,) = struct.unpack("<Q", _read_exact(fd, _HEADER.size, deadline, tick))
    if size > MAX_MESSAGE:
        raise ProtocolError(f"a message of {size:,} bytes (more than {MAX_MESSAGE // 2**20} MiB)")
    return loads(_read_exact(fd, size, deadline, tick))


# ---------------------------------------------------------------------------------------------- values


def describe_type(value: Any) -> str:
    """What a rejected value was, for the grader's message ("AlwaysEqual", "CheatTensor (a torch.Tensor
    subclass)")."""
    cls = type(value)
    name = "".join(c for c in str(getattr(cls, "__name__", "object")) if c.isprintable())[:60] or "object"
    if isinstance(value, torch.Tensor):
        return f"{name} (a torch.Tensor subclass)"
    return name


def to_template(value: Any, tensors: list[torch.Tensor], depth: int = 0) -> Any:
    """Split a value into a template and its tensors (appended to `tensors`, not detached). Anything that is not a plain
    tensor, tuple, list, None, bool, int or float becomes {"rejected": type name}."""
    if type(value) is torch.Tensor or type(value) is torch.nn.Parameter:  # the sender detaches (`.detach()`
        tensors.append(value)                                               # of a Parameter is a plain tensor)
        return {"T": len(tensors) - 1}
    if value is None or type(value) in (bool, int, float):
        return value
    if depth < MAX_DEPTH and type(value) in (tuple, list):
        return {type(value).__name__: [to_template(v, tensors, depth + 1) for v in value]}
    return {"rejected": describe_type(value)}


class Rejected:
    """Stands in for a value the submission returned that the grader does not accept: the engine then
    reports "your function returned a <type>"."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


_REJECTED: dict[str, type] = {}


def rejected(name: str) -> Rejected:
    label = f"{name} (not a plain tensor)" if "subclass" not in name else name.replace(")", ", not a plain tensor)")
    if label not in _REJECTED:
        _REJECTED[label] = type(label, (Rejected,), {})
    return _REJECTED[label]()


def check_tensor(t: Any) -> torch.Tensor:
    if type(t) is not torch.Tensor:
        raise ProtocolError(f"expected a plain tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise ProtocolError(f"a {t.layout} tensor")
    return t


def from_template(template: Any, tensors: Any, used: set[int] | None = None, depth: int = 0) -> Any:
    """Rebuild a value from a template received from the other side, checking the grammar strictly."""
    used = set() if used is None else used
    if depth > MAX_DEPTH:
        raise ProtocolError("nested too deeply")
    if template is None or type(template) in (bool, int, float):
        return template
    if type(template) is not dict or len(template) != 1:
        raise ProtocolError(f"unexpected {type(template).__name__} in a template")
    (key, item), = template.items()
    if key == "T":
        if type(item) is not int or not isinstance(tensors, list) or not 0 <= item < len(tensors) or item in used:
            raise ProtocolError(f"bad tensor reference {item!r}")
        used.add(item)
        return check_tensor(tensors[item])
    if key in ("tuple", "list"):
        if type(item) is not list:
            raise ProtocolError(f"a {key} that is not a list")
        items = [from_template(v, tensors, used, depth + 1) for v in item]
        return tuple(items) if key == "tuple" else items
    if key == "rejected":
        if type(item) is not str:
            raise ProtocolError("a rejected value without a name")
        return rejected(item[:120])
    raise ProtocolError(f"unknown template key {key!r}")


def flat_tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of a (nested tuple/list) value, depth first: the order both sides number them in."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat_tensors(v)]
    return []
