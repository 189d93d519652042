"""The untrusted side: one process per submission, which runs the student's code and decides nothing.

    python -m course_utils.gradebook.worker --requests FD --responses FD --notebook COPY --name DISPLAY
                                            [--memory BYTES]

or, by default, the same forked from multiprocessing's fork server with the course's modules already
imported (`child`; saves the ~5 s of imports per submission). It limits its own memory (RLIMIT_DATA,
before any student code runs), loads the definitions of a *copy* of the notebook cell by cell — imports,
functions, classes and UPPER_CASE literal constants, what `notebook_functions.load_namespace` keeps (same
`definitions()`); a cell that raises is recorded and the others still load — and then serves the grader's
requests over two pipes (course_utils.gradebook.protocol):

    describe  NAME                  is NAME defined, callable, with which parameters
    call      NAME, args, kwargs    run the student's function; reply with its result as plain tensors, which
                                    inputs it changed in place, and which course_utils.refs functions it called
    backward  call id, grad_outputs vector-Jacobian product through that call's graph (kept until `release`)
    check     exercise, index       run one of the exercise's extra checks (FLOP count, torch-call count) here,
                                    where they can observe the function; reply with the outcome's text
    release / exit

Its stdout and stderr go nowhere the grader reads: a printed "✅ passed" is never seen. Its replies are
plain data; the grader validates them and decides.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import linecache
import os
import pkgutil
import re
import resource
import traceback
from pathlib import Path
from typing import Any

MISSING = object()
# bound when this module is imported, before any submission runs: patching `traceback` or `torch` later
# changes what the submission's own code sees, not how this process reports
_extract_tb = traceback.extract_tb
_LIBRARIES = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep, os.sep + "lib" + os.sep + "python",
              "<frozen ", os.sep + "course_utils" + os.sep + "grading" + os.sep)
_OOM_TEXT = ("can't allocate memory", "not enough memory", "out of memory", "Cannot allocate memory")


def limit_memory(limit: int) -> None:
    """RLIMIT_DATA (heap and private mappings): torch's allocations fail beyond it. RLIMIT_AS would also
    count the address space torch and its libraries reserve, and break them."""
    if limit > 0:
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        except (ValueError, OSError, AttributeError):  # not on this platform: the grader's RSS watch remains
            pass


# ------------------------------------------------------------------------------------------ refs recorder


class RefsRecorder:
    """Records which course_utils.refs functions the submission calls while one of its functions runs.

    Installed before the notebook is loaded, so `from course_utils.refs... import x` binds the recording
    wrapper. A submission that reloads the modules or calls fla/mamba-ssm directly is not seen (issue 9
    adds forbidden-call checks)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active = False
        self._depth = 0

    def install(self) -> None:
        import course_utils.refs as refs

        modules = [refs] + [importlib.import_module(f"{refs.__name__}.{m.name}")
                            for m in pkgutil.iter_modules(refs.__path__) if not m.name.startswith("_")]
        wrapped: dict[Any, Any] = {}
        for mod in modules:
            for attr, obj in list(vars(mod).items()):
                if (attr.startswith("_") or attr in ("backends_used", "last_backend") or not inspect.isfunction(obj)
                        or not str(getattr(obj, "__module__", "")).startswith("course_utils.refs")):
                    continue
                if obj not in wrapped:
                    wrapped[obj] = self._wrap(obj)
                setattr(mod, attr, wrapped[obj])

    def _wrap(self, fn: Any) -> Any:
        label = f"{fn.__module__.removeprefix('course_utils.refs.')}.{fn.__name__}"

        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if self.active and self._depth == 0 and label not in self.calls:
                self.calls.append(label)
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1

        return recorded

    def start(self) -> None:
        self.calls, self.active, self._depth = [], True, 0

    def stop(self) -> list[str]:
        self.active = False
        return list(self.calls)


# ------------------------------------------------------------------------------------------ describing


def describe_exception(exc: BaseException, prefix: str) -> dict[str, Any]:
    """Type name, message, and the deepest frame of the student's own code (a cell of the notebook)."""
    try:
        return _describe(exc, prefix)
    except BaseException:  # noqa: BLE001 — an exception whose type or frames misbehave: report what we can
        return {"type": "Exception", "message": "<an exception that could not be described>", "frame": None,
                "nframes": 0}


def _describe(exc: BaseException, prefix: str) -> dict[str, Any]:
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 — a student's __str__ may raise anything
        message = "<the exception's message could not be printed>"
    frames = _extract_tb(exc.__traceback__)
    # the student's own cells; else (code the notebook imports) the deepest frame outside libraries and
    # this file, as the engine's format_exception picks it
    mine = [f for f in frames if str(f.filename).startswith(prefix)] or [
        f for f in frames if not any(m in str(f.filename) for m in _LIBRARIES) and f.filename != __file__]
    frame = None
    if mine:
        f = mine[-1]
        frame = [str(f.filename), int(f.lineno or 0), str(f.name), str(f.line or "")]
    return {"type": str(type(exc).__name__), "message": message[:4000], "frame": frame, "nframes": len(frames)}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OOM_TEXT))


# ------------------------------------------------------------------------------------------ the server


class Server:
    def __init__(self, fd_in: int, fd_out: int, name: str) -> None:
        import torch

        from course_utils.exercises import EXERCISES
        from course_utils.gradebook import protocol
        from course_utils.grading.trial import Fail, Trial

        # bound before the submission is loaded: rebinding the modules' names later does not reach these
        self.torch, self.protocol, self.exercises, self.Fail, self.Trial = torch, protocol, EXERCISES, Fail, Trial
        self.fd_in, self.fd_out, self.name = fd_in, fd_out, name
        self.prefix = f"{name}#cell"
        self.namespace: dict[str, Any] = {}
        self.graphs: dict[int, tuple[list[Any], list[Any]]] = {}
        self.recorder = RefsRecorder()
        self.recorder.install()

    # -------------------------------------------------------------------------------------- loading
    def load(self, path: Path) -> dict[str, Any]:
        """Every code cell's definitions, in order; a cell that raises is recorded, the others still load."""
        import nbformat

        from course_utils.notebook_functions import definitions

        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as exc:
            return {"op": "unreadable", "error": describe_exception(exc, self.prefix)}
        self.namespace = {"__name__": f"notebook:{Path(self.name).stem}"}
        cell_errors = []
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            # magics and shell lines become blank lines, so that line numbers stay the cell's own
            source = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in cell.source.splitlines())
            filename = f"{self.prefix}{i}"
            linecache.cache[filename] = (len(source), None, [ln + "\n" for ln in source.splitlines()], filename)
            # what the cell defines, even when it does not parse (a SyntaxError costs its own functions only)
            names = re.findall(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", source, re.MULTILINE)
            try:
                tree = definitions(source)
                exec(compile(tree, filename, "exec"), self.namespace)  # noqa: S102 — this process is the sandbox
            except Exception as exc:
                cell_errors.append({"cell": i, "names": names, "error": describe_exception(exc, self.prefix)})
        return {"op": "loaded", "cell_errors": cell_errors}

    # -------------------------------------------------------------------------------------- requests
    def serve(self) -> None:
        protocol = self.protocol
        handlers = {"describe": self.describe, "call": self.call, "backward": self.backward, "check": self.check,
                    "release": self.release}
        while True:
            try:
                req = protocol.read_message(self.fd_in)
            except (protocol.Closed, protocol.ProtocolError):
                return
            op = req.get("op") if isinstance(req, dict) else None
            if op == "exit":
                return
            try:
                reply = handlers[op](req)
            except BaseException as exc:  # noqa: BLE001 — a fault of this process, reported, not fatal
                reply = {"ok": False, "kind": "worker", "error": describe_exception(exc, self.prefix)}
            reply["id"] = req.get("id")
            try:
                protocol.write_message(self.fd_out, reply)
            except BaseException as exc:  # noqa: BLE001 — e.g. torch.save intercepted by the submission
                try:
                    protocol.write_message(self.fd_out, {"id": req.get("id"), "ok": False, "kind": "worker",
                                                         "error": describe_exception(exc, self.prefix)})
                except BaseException:  # noqa: BLE001
                    return

    def describe(self, req: dict[str, Any]) -> dict[str, Any]:
        obj = self.namespace.get(req["name"], MISSING)
        if obj is MISSING:
            return {"ok": True, "present": False}
        if not callable(obj):
            return {"ok": True, "present": True, "callable": False, "type": self.protocol.describe_type(obj)}
        params = None
        try:
            params = [[p.name, int(p.kind), p.default is not p.empty]
                      for p in inspect.signature(obj).parameters.values()]
        except (TypeError, ValueError):
            pass
        name = getattr(obj, "__name__", None)
        return {"ok": True, "present": True, "callable": True, "params": params,
                "name": name if isinstance(name, str) else req["name"]}

    def _failure(self, exc: BaseException) -> dict[str, Any]:
        error = describe_exception(exc, self.prefix)
        if isinstance(exc, NotImplementedError):
            kind = "not_attempted"
        elif _is_oom(exc):
            kind = "memory"
        elif isinstance(exc, Exception):
            kind = "signature" if isinstance(exc, TypeError) and error["nframes"] == 1 else "exception"
        else:  # SystemExit, KeyboardInterrupt, ...
            kind = "exit"
            if isinstance(exc, SystemExit):
                error["message"] = repr(exc.code)[:200]
        return {"ok": False, "kind": kind, "error": error}

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        torch, protocol = self.torch, self.protocol
        fn = self.namespace[req["fn"]]
        tensors = list(req["tensors"])
        for t, rg in zip(tensors, req["requires_grad"]):
            if rg:
                t.requires_grad_(True)
        used: set[int] = set()
        args = [protocol.from_template(a, tensors, used) for a in req["args"]]
        kwargs = {k: protocol.from_template(v, tensors, used) for k, v in req["kwargs"].items()}
        before = [t.detach().clone() for t in tensors]
        self.recorder.start()
        try:
            with torch.set_grad_enabled(bool(req["grad_enabled"])):
                out = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 — whatever the student's code raises is reported
            return {**self._failure(exc), "refs": self.recorder.stop()}
        refs = self.recorder.stop()
        mutated = [[i, t.detach().clone()] for i, (t, b) in enumerate(zip(tensors, before))
                   if not t.is_meta and (t.shape != b.shape or not torch.equal(t.detach(), b))]
        outs: list[Any] = []
        template = protocol.to_template(out, outs)
        if any(req["requires_grad"]) and any(o.requires_grad for o in outs):
            self.graphs[req["id"]] = ([t for t, rg in zip(tensors, req["requires_grad"]) if rg], outs)
        return {"ok": True, "out": template, "tensors": [_compact(o.detach()) for o in outs],
                "requires_grad": [bool(o.requires_grad) for o in outs], "mutated": mutated, "refs": refs}

    def backward(self, req: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        inputs, outs = self.graphs[req["call"]]
        used: set[int] = set()
        sent = list(req["tensors"])
        grads = [self.protocol.from_template(g, sent, used) for g in req["grads"]]
        pairs = [(o, g if g is not None else torch.zeros_like(o)) for o, g in zip(outs, grads) if o.requires_grad]
        try:
            result = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True,
                                         retain_graph=True)
        except BaseException as exc:  # noqa: BLE001 — the student's backward
            return self._failure(exc)
        return {"ok": True, "grads": [None if g is None else _compact(g.detach()) for g in result]}

    def check(self, req: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        ex = self.exercises[req["exercise"]]
        check = ex.extra_checks[req["index"]]
        fn = self.namespace[req["fn"]]
        device = torch.device(req["device"])
        dtypes = [getattr(torch, d) for d in req["dtypes"]]
        trial = self.Trial(ex, ex.cases(device, dtypes)[0], device, {}, req["fn_name"])
        try:
            check(trial, fn)
        except self.Fail as f:
            return {"ok": True, "passed": False, "message": str(f.message)[:8000],
                    "hint": None if f.hint is None else str(f.hint)[:4000], "last_call": str(trial.last_call)[:500]}
        except BaseException as exc:  # noqa: BLE001
            return self._failure(exc)
        return {"ok": True, "passed": True}

    def release(self, req: dict[str, Any]) -> dict[str, Any]:
        self.graphs.clear()
        return {"ok": True}


def _compact(t: Any) -> Any:
    """A view of a much larger storage is sent as a copy (torch.save writes the whole storage)."""
    try:
        if t.untyped_storage().nbytes() > 2 * t.numel() * t.element_size() + 4096:
            return t.clone()
    except Exception:  # noqa: BLE001
        pass
    return t


def run(fd_in: int, fd_out: int, notebook: Path, name: str, memory: int) -> None:
    """Limit memory, load the notebook, answer requests until told to exit; never returns."""
    limit_memory(memory)

    import torch

    torch.set_num_threads(1)
    import course_utils  # noqa: F401 — sets TRITON_INTERPRET before fla is imported
    from course_utils.gradebook import protocol

    server = Server(fd_in, fd_out, name)
    try:
        hello = server.load(notebook)
    except BaseException as exc:  # noqa: BLE001 — sys.exit(), KeyboardInterrupt... while loading
        code = exc.code if isinstance(exc, SystemExit) else None
        hello = {"op": "exited", "exception": type(exc).__name__, "code": repr(code)[:200]}
        protocol.write_message(fd_out, hello)
        os._exit(0)
    protocol.write_message(fd_out, hello)
    server.serve()
    os._exit(0)  # skip interpreter teardown: the submission may have registered atexit handlers


# Imported once by the fork server, so that a worker forked from it starts with them loaded: everything the
# labs' setup and import cells use, and what torch imports lazily on a first call (autograd.grad with
# grad_outputs imports symbolic_shapes and sympy: a second). A module missing here is imported by the worker.
PRELOAD = ["torch", "torch.fx.experimental.symbolic_shapes", "numpy", "nbformat", "matplotlib", "matplotlib.pyplot",
           "tqdm.auto", "course_utils", "course_utils.exercises", "course_utils.notebook_functions",
           "course_utils.refs", "course_utils.bench", "course_utils.plots", "course_utils.widgets",
           "course_utils.feature_maps", "course_utils.inputs", "course_utils.conventions",
           "course_utils.gradebook.protocol", "course_utils.gradebook.worker"]


def child(requests: Any, responses: Any, notebook: Path, name: str, memory: int, workdir: Path,
          log: Path) -> None:
    """A worker forked from the multiprocessing fork server (which never runs a submission's code): its own
    session (the grader kills the whole group), the private folder as cwd, stdout to /dev/null and stderr
    to a log the grader reads only for its own failures. requests / responses: multiprocessing Connections
    whose file descriptors carry the protocol."""
    os.setsid()
    # nothing inherited from the fork server but the two pipes: not its listening socket, not the resource
    # tracker's pipe (a submission writing into every file descriptor it has must not reach them)
    keep = sorted({requests.fileno(), responses.fileno()})
    low = 3
    for fd in [*keep, os.sysconf("SC_OPEN_MAX")]:
        os.closerange(low, fd)
        low = fd + 1
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDWR)
    err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(err, 2)
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    run(requests.fileno(), responses.fileno(), notebook, name, memory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--responses", type=int, required=True)
    parser.add_argument("--notebook", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--memory", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.requests, args.responses, args.notebook, args.name, args.memory)


if __name__ == "__main__":
    main()
