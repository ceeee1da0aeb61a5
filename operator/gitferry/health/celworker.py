"""The CEL worker: a process of its own that evaluates healthCheckExprs, bounded.

Started by `sandbox` as `python -I -B celworker.py MEMORY_BYTES CPU_SECONDS` and
never imported by the operator. It imports the CEL runtime and the standard
library's json and resource, nothing of gitferry, and limits itself before the
CEL runtime is loaded: its address space to MEMORY_BYTES (an allocation past it
is a MemoryError, not the operator's memory), no core files, and, before each
request, CPU_SECONDS more of CPU time (SIGXCPU ends it: a backstop for when no
one is left to kill it). And should the container run out of memory all the
same, the kernel's OOM killer picks it first (oom_score_adj 1000), not the
operator.

One JSON document a line, on stdin and stdout:

- at start, to the operator: `{"ready": true}`, or `{"failed": "<why>"}` and exit;
- a request: `{"sources": ["<cel>", …]}`, then the object's top-level fields as
  one JSON object on the next line;
- the replies, one line per expression evaluated, in order, ending after the
  first that is not false: `{"value": true|false}`, `{"error": "<the CEL
  runtime's words>"}`, `{"type": "<type>"}` (a value that is not a bool), or
  `{"memory": true}` (the memory limit was reached: the worker then exits).

It ends at end of input: the operator closed the pipe, or is gone.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time
from typing import Any

# Compiled expression sets kept, least recently used dropped.
MAX_PROGRAMS = 256
# The runtime's words are clipped to one line of a condition by the operator;
# this only bounds the reply.
MAX_WORDS = 4096


def _lower(limit: int, value: int) -> None:
    """Set both the soft and the hard limit to `value` (never above the hard one)."""
    _, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))


def _cpu_budget(seconds: int) -> None:
    """SIGXCPU once this request has used `seconds` of CPU (RLIMIT_CPU counts the
    life of the process, so the soft limit moves up before each request)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(time.process_time()) + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def main(argv: list[str]) -> int:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must never corrupt a reply
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the operator's to handle

    def send(reply: dict[str, Any]) -> None:
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()

    try:
        memory, cpu = int(argv[1]), int(argv[2])
        _lower(resource.RLIMIT_AS, memory)
        _lower(resource.RLIMIT_CORE, 0)
        try:  # raising one's own score needs no privilege
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        from cel_expr_python import cel
        from cel_expr_python.ext import ext_encoders, ext_optional, ext_strings

        # The operator's environment (exprs._env): optional types, strings, encoders.
        env = cel.NewEnv(
            extensions=[
                ext_optional.ExtOptional(),
                ext_strings.ExtStrings(),
                ext_encoders.ExtEncoders(),
            ]
        )
    except Exception as e:
        send({"failed": f"{type(e).__name__}: {e}"})
        return 1
    send({"ready": True})

    programs: dict[tuple[str, ...], list[Any]] = {}

    def compiled(sources: tuple[str, ...]) -> list[Any]:
        """The programs of a set, compiled once; a source that does not compile
        (the operator parsed it already) is kept as its error's words."""
        found = programs.pop(sources, None)
        if found is None:
            found = []
            for source in sources:
                try:
                    found.append(env.compile(source, disable_check=True))
                except Exception as e:
                    found.append(str(e)[:MAX_WORDS])
            while len(programs) >= MAX_PROGRAMS:
                del programs[next(iter(programs))]
        programs[sources] = found
        return found

    def evaluate(program: Any, variables: dict[str, Any]) -> dict[str, Any]:
        if isinstance(program, str):
            return {"error": program}
        try:
            value = program.eval(data=variables)
        except MemoryError:
            raise
        except Exception as e:  # CEL's own failures, data it cannot convert
            return {"error": str(e)[:MAX_WORDS]}
        kind = value.type()
        if kind == cel.Type.BOOL:
            return {"value": bool(value.value())}
        if kind == cel.Type.ERROR:
            return {"error": str(value.value())[:MAX_WORDS]}
        return {"type": str(kind.name()).lower()[:MAX_WORDS]}

    stdin = sys.stdin.buffer
    while True:
        header, body = stdin.readline(), stdin.readline()
        if not body:
            return 0
        _cpu_budget(cpu)
        try:
            sources = tuple(json.loads(header)["sources"])
            try:
                variables = json.loads(body)
            except (ValueError, RecursionError) as e:
                send({"error": f"the object is not JSON: {e}"})
                continue
            for program in compiled(sources):
                reply = evaluate(program, variables)
                send(reply)
                if reply != {"value": False}:
                    break
            del variables
        except MemoryError:
            send({"memory": True})
            return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
