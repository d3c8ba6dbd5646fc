"""What the Ray and SLURM executor tests share: small recipes whose points run quickly, and Tasks for them."""
import socket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def point_recipes(ws, run='echo "$N" > n.txt; sleep 1', dep="echo dep > dep.txt"):
    """`point` (not cached, input n, running `run`) needs `shared-dep` (cached, running `dep`)."""
    ws.recipe("shared-dep", f"tags: shared-dep\nrun: {dep}\n")
    ws.recipe("point", f"""\
        tags: point
        cache: false
        deps: [shared-dep]
        inputs:
          n: {{type: int, default: 0, env: N}}
        run: {run}
        """)


def counted_dep(counter):
    """A dependency whose every build takes 2 s and appends a line to counter."""
    return f"sleep 2; echo built >> {counter}; echo dep > dep.txt"


def settings_of(ws):
    from engine.settings import Settings
    return Settings.from_env(environ=ws.env())


def task(i, **kw):
    from sweeps.executors import Task
    return Task(point_id=f"p{i:03d}", argv=["run", "point", f"--n={i}", "--json"], cpus=kw.pop("cpus", 1),
                gpus=0, measures=kw.pop("measures", False))
