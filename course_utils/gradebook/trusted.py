"""The grader's side of the trust boundary: the submission's process, and proxies the engine can grade.

`Worker` starts `python -m course_utils.gradebook.worker` on a copy of one notebook, in its own session
(its whole process group is killed at the end), with a memory limit, and talks to it through
course_utils.gradebook.protocol under a time budget; whatever goes wrong on that side — a timeout, the memory
limit, an exit, a signal, a malformed reply — surfaces here as `WorkerLost` with a reason a person can read.

`make_proxy` gives the engine a function with the student's name and parameters whose body sends the
inputs to the worker and returns the tensors it sends back, so `engine.evaluate` runs unchanged:

- an exception in the student's code is raised again here, with its type name, message and the student's
  own line (the engine's message shows it as it would in the notebook); NotImplementedError stays itself;
- inputs the function changed in place are changed here too, so the engine's mutation check sees it;
- in a gradient case the outputs are tied to the inputs by `RemoteGrad`, a torch.autograd.Function whose
  backward asks the worker for the vector-Jacobian product through the graph it kept for that call;
- `remote_checks` replaces an exercise's extra checks (which measure *how* the function computes, and so
  cannot run through a proxy) by requests that run them in the worker; their outcome is reported as
  "measured in the submission's process".

`WorkerLost` and `SubmissionExit` derive from BaseException so that the engine's `except Exception` (which
turns a student's exception into a failure message) lets them through to the caller.
"""

from __future__ import annotations

import itertools
import keyword
import linecache
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from course_utils.gradebook import protocol
from course_utils.grading.trial import fail

_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds course_utils/


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


class WorkerLost(BaseException):
    """The submission's process is gone or can no longer be trusted to answer. kind: "timeout", "memory",
    "crash" (exited, killed by a signal) or "protocol"."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class SubmissionExit(BaseException):
    """The student's code raised SystemExit / KeyboardInterrupt during a call (its process lives on)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _rss(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 — the process just ended
        return 0
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


class _Proc:
    """The worker process, however it was started: pid, poll() -> exit code or None, wait(timeout), kill()."""

    def __init__(self, pid: int, poll: Callable[[], int | None], wait: Callable[..., int], kill: Callable[[], None]):
        self.pid, self.poll, self.wait, self.kill = pid, poll, wait, kill


_FORK_CONTEXT: Any = None


def _fork_context() -> Any:
    """multiprocessing's fork-server context, its server preloading course_utils.gradebook.worker.PRELOAD."""
    global _FORK_CONTEXT
    if _FORK_CONTEXT is None:
        import multiprocessing

        from course_utils.gradebook.worker import PRELOAD

        os.environ.setdefault("MPLBACKEND", "Agg")  # the fork server imports pyplot: no display
        _FORK_CONTEXT = multiprocessing.get_context("forkserver")
        _FORK_CONTEXT.set_forkserver_preload(PRELOAD)
    return _FORK_CONTEXT


def _restart_fork_server() -> None:
    """Forget a dead fork server so that the next forked worker starts a new one."""
    try:
        from multiprocessing import forkserver

        forkserver._forkserver._stop()  # private, but the documented way tests reset it
    except Exception:  # noqa: BLE001 — then every later worker falls back to a fresh interpreter
        pass


class Worker:
    """One submission's process. `start()` loads the notebook; `begin(timeout)` gives an exercise its time
    budget: the seconds spent waiting for this process (the grader's own work, such as computing the
    expected values, does not count)."""

    _ids = itertools.count(1)

    def __init__(self, notebook: Path, display: str, memory: int, workdir: Path, method: str = "fork"):
        """method: "fork" (from the fork server, the default) or "exec" (a fresh interpreter)."""
        if method not in ("fork", "exec"):
            raise ValueError(f"method must be 'fork' or 'exec', not {method!r}")
        self.notebook, self.display, self.memory, self.workdir, self.method = \
            notebook, display, memory, workdir, method
        self.log = workdir / "worker-stderr.log"
        self.proc: _Proc | None = None
        self._conns: tuple[Any, ...] = ()
        self.budget = 0.0  # seconds the submission's process may still take in this exercise
        self.timeout = 0.0
        self.lost: WorkerLost | None = None
        self.refs_calls: list[str] = []
        self.cell_errors: list[dict[str, Any]] = []
        self.deadline: float | None = None
        self._peak_rss = 0
        self.cpu_used = 0.0  # CPU seconds of the worker process, added up when it is closed

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, load_timeout: float) -> None:
        import multiprocessing

        # a daemonic process (a Dask worker's, by default) may not start multiprocessing children
        if self.method == "fork" and not multiprocessing.current_process().daemon:
            try:
                self._start_forked()
            except (OSError, EOFError, ValueError, AssertionError):  # the fork server is gone (a submission
                _restart_fork_server()                                # may kill its parent): a fresh one next
                self._start_exec()
        else:
            self._start_exec()
        self.timeout = self.budget = load_timeout
        self.deadline = time.monotonic() + self.budget
        hello = self._read("while loading the notebook")
        op = hello.get("op")
        if op == "loaded" and isinstance(hello.get("cell_errors"), list):
            self.cell_errors = [e for e in hello["cell_errors"] if isinstance(e, dict)]
            return
        if op == "exited":
            what = f"sys.exit({_text(hello.get('code'), 60)})" if hello.get("exception") == "SystemExit" \
                else _text(hello.get("exception"), 60)
            self._lose("crash", f"the submission exited ({what}) while loading")
        if op == "unreadable":
            err = hello.get("error") if isinstance(hello.get("error"), dict) else {}
            self._lose("crash", "the notebook could not be read: "
                                f"{_text(err.get('type'), 60)}: {_text(err.get('message'), 300)}")
        self._lose("protocol", "the submission's process broke the grading protocol while loading")

    def _start_exec(self) -> None:
        """A fresh interpreter: `python -m course_utils.gradebook.worker` (imports everything itself)."""
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        cmd = [sys.executable, "-m", "course_utils.gradebook.worker", "--requests", str(req_r), "--responses",
               str(resp_w), "--notebook", str(self.notebook), "--name", self.display, "--memory", str(self.memory)]
        with open(self.log, "ab") as log:
            popen = subprocess.Popen(cmd, pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log, cwd=self.workdir, env=env,
                                     start_new_session=True)
        os.close(req_r)
        os.close(resp_w)
        self.proc = _Proc(popen.pid, popen.poll, popen.wait, popen.kill)
        self.req_fd, self.resp_fd = req_w, resp_r
        os.set_blocking(self.req_fd, False)

    def _start_forked(self) -> None:
        """Forked from multiprocessing's fork server, which has the course's modules imported and never runs
        a submission's code (course_utils.gradebook.worker.child)."""
        from course_utils.gradebook import worker

        ctx = _fork_context()
        req_r, req_w = ctx.Pipe(duplex=False)
        resp_r, resp_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=worker.child, name=f"gradebook-{self.display}", daemon=False,
                              args=(req_r, resp_w, self.notebook, self.display, self.memory, self.workdir, self.log))
        process.start()
        req_r.close()
        resp_w.close()

        def wait(timeout: float | None = None) -> int:
            process.join(timeout)
            if process.exitcode is None:
                raise subprocess.TimeoutExpired("worker", timeout or 0)
            return process.exitcode

        self.proc = _Proc(process.pid, lambda: process.exitcode, wait, process.kill)
        self._conns = (req_w, resp_r)  # keep them open: their file descriptors carry the protocol
        self.req_fd, self.resp_fd = req_w.fileno(), resp_r.fileno()
        os.set_blocking(self.req_fd, False)

    def cpu_seconds(self) -> float:
        """CPU time the worker process has used so far (0 when it cannot be read)."""
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            pass
        try:
            import psutil

            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except Exception:  # noqa: BLE001
            return 0.0

    def close(self) -> None:
        if self.proc is None:
            return
        self.cpu_used += self.cpu_seconds()
        if self.proc.poll() is None and self.lost is None:
            try:
                protocol.write_message(self.req_fd, {"op": "exit"}, time.monotonic() + 1)
                self.proc.wait(2)
            except Exception:  # noqa: BLE001
                pass
        self._kill()
        if self._conns:
            for conn in self._conns:
                conn.close()
        else:
            for fd in (self.req_fd, self.resp_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.proc = None

    def _kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and anything it started
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:  # not yet in its own session (killed before setsid)
            try:
                self.proc.kill()
            except (ProcessLookupError, OSError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def stderr_tail(self, n: int = 20) -> str:
        """The worker's last stderr lines: for the grader's own failures only (the submission writes there)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _lose(self, kind: str, reason: str) -> None:
        self._kill()
        self.lost = WorkerLost(kind, reason)
        raise self.lost

    # ------------------------------------------------------------------------------------------ requests
    def begin(self, timeout: float) -> None:
        """A new exercise: its own time budget; graphs of the previous one dropped; refs calls reset."""
        self.timeout = self.budget = timeout
        self.refs_calls = []
        self.request({"op": "release"}, "")

    def _watch(self, _step: float) -> None:
        assert self.proc is not None
        rss = _rss(self.proc.pid)
        self._peak_rss = max(self._peak_rss, rss)
        if self.memory and rss > self.memory:
            raise MemoryError

    def _read(self, during: str) -> dict[str, Any]:
        try:
            reply = protocol.read_message(self.resp_fd, self.deadline, self._watch)
        except protocol.Timeout:
            self._lose("timeout", f"timed out after {self.timeout:g} s {during}".rstrip())
        except MemoryError:
            self._lose("memory", f"the submission's process exceeded its memory limit of {format_bytes(self.memory)} "
                                  f"{during}".rstrip())
        except protocol.Closed:
            self._lose(*self._exit_reason(during))
        except protocol.ProtocolError as exc:
            self._lose("protocol", f"the submission's process broke the grading protocol {during} ({exc})")
        if not isinstance(reply, dict):
            self._lose("protocol", f"the submission's process broke the grading protocol {during} (a reply that "
                                   "is not a message)")
        return reply

    def _exit_reason(self, during: str) -> tuple[str, str]:
        assert self.proc is not None
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return "crash", f"the submission's process closed its pipe {during}".rstrip()
        near_limit = self.memory and self._peak_rss > 0.8 * self.memory
        if rc < 0:
            what = f"was killed by {_signal_name(-rc)}"
            if near_limit:
                what += f" near its memory limit of {format_bytes(self.memory)}"
        else:
            what = f"exited with code {rc} (os._exit() or a crash)"
        return ("memory" if near_limit else "crash"), f"the submission's process {what} {during}".rstrip()

    def request(self, message: dict[str, Any], during: str) -> dict[str, Any]:
        if self.lost is not None:
            raise self.lost
        message = {**message, "id": next(self._ids)}
        started = time.monotonic()
        self.deadline = started + self.budget
        try:
            protocol.write_message(self.req_fd, message, self.deadline, self._watch)
        except protocol.Timeout:
            self._lose("timeout", f"timed out after {self.timeout:g} s {during}".rstrip())
        except MemoryError:
            self._lose("memory", f"the submission's process exceeded its memory limit of {format_bytes(self.memory)} "
                                  f"{during}".rstrip())
        except protocol.Closed:
            self._lose(*self._exit_reason(during))
        reply = self._read(during)
        self.budget -= time.monotonic() - started
        if reply.get("id") != message["id"] or not isinstance(reply.get("ok"), bool):
            self._lose("protocol", f"the submission's process broke the grading protocol {during} (a reply to "
                                   "another request)")
        if not reply["ok"]:
            self._raise_failure(reply, during)
        return reply

    def _raise_failure(self, reply: dict[str, Any], during: str) -> None:
        err = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        kind = reply.get("kind")
        refs = reply.get("refs")
        if isinstance(refs, list):
            self._note_refs(refs)
        if kind == "exit":
            what = f"sys.exit({_text(err.get('message'), 60)})" if err.get("type") == "SystemExit" \
                else _text(err.get("type"), 60)
            raise SubmissionExit(f"the submission exited ({what}) {during}".rstrip())
        if kind == "memory":
            self._lose("memory", f"the submission's process exceeded its memory limit of {format_bytes(self.memory)} "
                                  f"{during} ({_text(err.get('type'), 60)}: {_text(err.get('message'), 200)})")
        if kind == "worker":
            raise RuntimeError(f"the grader's worker failed {during}: {_text(err.get('type'), 60)}: "
                               f"{_text(err.get('message'), 500)}")
        if kind in ("exception", "signature", "not_attempted"):
            raise_as_student(err)
        self._lose("protocol", f"the submission's process broke the grading protocol {during} (kind {kind!r})")

    def _note_refs(self, refs: list[Any]) -> None:
        for r in refs:
            if isinstance(r, str) and r[:80] not in self.refs_calls:
                self.refs_calls.append(r[:80])

    # ------------------------------------------------------------------------------------------ operations
    def describe(self, name: str) -> dict[str, Any]:
        return self.request({"op": "describe", "name": name}, f"while looking up {name}")

    def call(self, fn: str, label: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        during = f"in {label}()"
        tensors: list[torch.Tensor] = []
        args_t = [protocol.to_template(a, tensors) for a in args]
        kwargs_t = {k: protocol.to_template(v, tensors) for k, v in kwargs.items()}
        grad_enabled = torch.is_grad_enabled()
        requires_grad = [bool(grad_enabled and t.requires_grad) for t in tensors]
        reply = self.request({"op": "call", "fn": fn, "args": args_t, "kwargs": kwargs_t,
                              "tensors": [t.detach() for t in tensors], "requires_grad": requires_grad,
                              "grad_enabled": grad_enabled}, during)
        try:
            outs = reply["tensors"]
            out_rg = reply["requires_grad"]
            if (not isinstance(outs, list) or not isinstance(out_rg, list) or len(out_rg) != len(outs)
                    or not all(type(r) is bool for r in out_rg)):
                raise protocol.ProtocolError("malformed outputs")
            outs = [protocol.check_tensor(t) for t in outs]
            value_check = protocol.from_template(reply["out"], outs)  # validates before anything is built
            del value_check
            self._write_back(tensors, reply.get("mutated"))
        except (protocol.ProtocolError, KeyError, TypeError) as exc:
            self._lose("protocol", f"the submission's process broke the grading protocol {during} ({exc})")
        if isinstance(reply.get("refs"), list):
            self._note_refs(reply["refs"])
        if any(requires_grad) and any(out_rg):
            seen: set[int] = set()
            for i, t in enumerate(outs):  # one tensor returned twice arrives as one object: keep them apart
                if id(t) in seen:
                    outs[i] = t.clone()
                seen.add(id(t))
            link = _Link(self, reply["id"], outs, out_rg, [t for t, rg in zip(tensors, requires_grad) if rg], label)
            outs = list(RemoteGrad.apply(link, *link.inputs))
        return protocol.from_template(reply["out"], outs)

    def _write_back(self, tensors: list[torch.Tensor], mutated: Any) -> None:
        """What the function changed in place in the worker, changed here too (the engine then reports it)."""
        if not isinstance(mutated, list):
            raise protocol.ProtocolError("malformed in-place changes")
        for item in mutated:
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                    and 0 <= item[0] < len(tensors)):
                raise protocol.ProtocolError("malformed in-place change")
            target, new = tensors[item[0]], protocol.check_tensor(item[1])
            with torch.no_grad():
                if new.shape == target.shape:
                    target.copy_(new.to(target.dtype))
                else:  # reshaped in place (unsqueeze_, resize_): make the change visible as values
                    target.fill_(float("nan"))

    def backward(self, link: _Link, grads: tuple[torch.Tensor | None, ...]) -> list[torch.Tensor | None]:
        during = f"in the backward pass of {link.label}()"
        sent = [None if g is None else g.detach() for g in grads]
        holder: list[torch.Tensor] = []
        template = [protocol.to_template(g, holder) for g in sent]
        reply = self.request({"op": "backward", "call": link.call_id, "grads": template, "tensors": holder}, during)
        # the worker sends its gradients as a plain list (tensor or None per input)
        result = reply.get("grads")
        if not isinstance(result, list) or len(result) != len(link.inputs):
            self._lose("protocol", f"the submission's process broke the grading protocol {during}")
        out: list[torch.Tensor | None] = []
        for g, x in zip(result, link.inputs):
            if g is None:
                out.append(None)
                continue
            try:
                g = protocol.check_tensor(g)
            except protocol.ProtocolError as exc:
                self._lose("protocol", f"the submission's process broke the grading protocol {during} ({exc})")
            if g.shape != x.shape:
                raise RuntimeError(f"the backward pass returned a gradient of shape {list(g.shape)} for an input of "
                                   f"shape {list(x.shape)}")
            out.append(g.to(x.dtype))
        return out

    def check(self, exercise_id: str, index: int, fn: str, label: str, device: torch.device,
              dtypes: list[torch.dtype]) -> dict[str, Any]:
        return self.request({"op": "check", "exercise": exercise_id, "index": index, "fn": fn, "fn_name": label,
                             "device": str(device), "dtypes": [str(d).replace("torch.", "") for d in dtypes]},
                            f"in an extra check of {label}()")


def _text(value: Any, n: int) -> str:
    return "".join(c for c in str(value) if c.isprintable() or c in "\n\t")[:n]


# ---------------------------------------------------------------------------------------------- autograd


class _Link:
    """What a RemoteGrad node needs: which worker call it stands for, and its tensors on this side."""

    def __init__(self, worker: Worker, call_id: int, outs: list[torch.Tensor], out_rg: list[bool],
                 inputs: list[torch.Tensor], label: str):
        self.worker, self.call_id, self.outs, self.out_rg, self.inputs, self.label = \
            worker, call_id, outs, out_rg, inputs, label


class RemoteGrad(torch.autograd.Function):
    """Ties the worker's outputs to the inputs that require grad; backward = the worker's VJP."""

    @staticmethod
    def forward(ctx: Any, link: _Link, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.link = link
        nondiff = [o for o, rg in zip(link.outs, link.out_rg) if not rg]
        if nondiff:
            ctx.mark_non_differentiable(*nondiff)
        return tuple(link.outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        link = ctx.link
        return (None, *link.worker.backward(link, grads))


# ---------------------------------------------------------------------------------------------- exceptions

_EXCEPTION_TYPES: dict[str, type] = {}


def raise_as_student(err: dict[str, Any]) -> None:
    """Raise, here, an exception that reads like the student's: the same type name and message, raised from
    a frame at the student's file, line and function (so the engine's message shows their line)."""
    name = _text(err.get("type"), 60)
    message = _text(err.get("message"), 4000)
    if name == "NotImplementedError":
        exc: BaseException = NotImplementedError(message)
    else:
        if not name.isidentifier() or keyword.iskeyword(name):
            name = "Exception"
        cls = _EXCEPTION_TYPES.setdefault(name, type(name, (Exception,), {"__module__": "submission"}))
        exc = cls(message)
    frame = err.get("frame")
    if (isinstance(frame, list) and len(frame) == 4 and isinstance(frame[0], str) and type(frame[1]) is int
            and 0 < frame[1] < 100_000 and isinstance(frame[2], str) and frame[2].isidentifier()
            and not keyword.iskeyword(frame[2])):
        filename, lineno, fname, line = _text(frame[0], 300), frame[1], frame[2], _text(frame[3], 300)
        if filename not in linecache.cache:
            linecache.cache[filename] = (0, None, ["\n"] * (lineno - 1) + [line + "\n"], filename)
        namespace: dict[str, Any] = {}
        exec(compile("\n" * (lineno - 1) + f"def {fname}(e): raise e", filename, "exec"), namespace)  # noqa: S102
        try:
            namespace[fname](exc)
        except BaseException as raised:  # noqa: BLE001
            raised.__context__ = None
            raise raised from None
    raise exc from None


# ---------------------------------------------------------------------------------------------- proxies

_DISPATCH, _UNSET = "__gradebook_dispatch__", "__gradebook_unset__"
_KINDS = (0, 1, 2, 3, 4)  # inspect.Parameter kinds: POSITIONAL_ONLY ... VAR_KEYWORD


class _Unset:
    def __repr__(self) -> str:
        return "<default>"


UNSET = _Unset()


def _parameters(info: dict[str, Any]) -> list[tuple[str, int, bool]] | None:
    params = info.get("params")
    if not isinstance(params, list) or len(params) > 64:
        return None
    out, last_kind = [], 0
    for p in params:
        if not (isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and p[0].isidentifier()
                and not keyword.iskeyword(p[0]) and not p[0].startswith("__gradebook") and type(p[1]) is int
                and p[1] in _KINDS and p[1] >= last_kind and type(p[2]) is bool):
            return None
        out.append((p[0], p[1], p[2]))
        last_kind = p[1]
    return out


def make_proxy(worker: Worker, name: str, info: dict[str, Any]) -> Callable[..., Any]:
    """A function named like the student's, with its parameters (so a call with the wrong arguments fails
    here exactly as it would in the notebook), that runs the student's function in the worker."""
    label = info.get("name") if isinstance(info.get("name"), str) and info["name"].isidentifier() else name
    if keyword.iskeyword(label):
        label = name
    params = _parameters(info)

    def dispatch(bound: dict[str, Any]) -> Any:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        has_var_positional = any(kind == 2 for _, kind, _ in params or ())
        positional = True  # still filling positions (an unset default ends that)
        for pname, kind, _ in params or ():
            value = bound[pname]
            if kind in (0, 1):
                if value is UNSET:
                    positional = False
                elif positional and (kind == 0 or has_var_positional):
                    args.append(value)
                else:
                    kwargs[pname] = value
            elif kind == 2:
                args.extend(value)
            elif kind == 3 and value is not UNSET:
                kwargs[pname] = value
            elif kind == 4:
                kwargs.update(value)
        return worker.call(name, label, tuple(args), kwargs)

    if params is not None:
        parts, star_done = [], False
        for i, (pname, kind, has_default) in enumerate(params):
            if kind == 3 and not star_done:
                parts.append("*")
                star_done = True
            text = {2: f"*{pname}", 4: f"**{pname}"}.get(kind, pname + (f"={_UNSET}" if has_default else ""))
            if kind == 2:
                star_done = True
            parts.append(text)
            if kind == 0 and (i + 1 == len(params) or params[i + 1][1] != 0):
                parts.append("/")
        source = f"def {label}({', '.join(parts)}):\n    return {_DISPATCH}(locals())\n"
        namespace = {_DISPATCH: dispatch, _UNSET: UNSET}
        try:
            exec(compile(source, f"<{worker.display}: {label}>", "exec"), namespace)  # noqa: S102
            return namespace[label]
        except SyntaxError:  # e.g. a default before a parameter without one: fall back to any arguments
            params = None

    def proxy(*args: Any, **kwargs: Any) -> Any:
        return worker.call(name, label, args, kwargs)

    proxy.__name__ = proxy.__qualname__ = label
    return proxy


def remote_checks(worker: Worker, exercise: Any, name: str, label: str, device: torch.device,
                  dtypes: list[torch.dtype], measured: list[str]) -> tuple[Callable[..., None], ...]:
    """The exercise's extra checks, each run in the worker; `measured` collects the ones that ran there."""

    def make(index: int, check: Callable[..., None]) -> Callable[..., None]:
        qualname = str(getattr(check, "__qualname__", getattr(check, "__name__", "check")))
        what = qualname.split(".<locals>")[0].rsplit(".", 1)[-1].strip("_")  # forbid, no_quadratic_memory, ...

        def remote(trial: Any, fn: Any) -> None:
            reply = worker.check(exercise.id, index, name, label, device, dtypes)
            measured.append(what)
            if reply.get("passed") is True:
                return
            trial.last_call = _text(reply.get("last_call", ""), 500)
            hint = reply.get("hint")
            fail(_text(reply.get("message"), 8000) + "\n(this check was measured in the submission's process)",
                 None if hint is None else _text(hint, 4000))

        remote.__name__ = getattr(check, "__name__", "extra_check")
        return remote

    return tuple(make(i, c) for i, c in enumerate(exercise.extra_checks))
