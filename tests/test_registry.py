import threading
import time

import pytest

from edgekd.errors import BadInputError
from edgekd.registry import Registry


def test_lazy_entry_resolves_once_and_unknown_names_are_listed():
    reg = Registry("thing")
    reg.register_lazy("join", "os.path:join")
    reg.register("direct")(len)
    import os.path

    assert reg.get("join") is os.path.join and reg.get("direct") is len
    assert reg.names() == ["direct", "join"]
    with pytest.raises(BadInputError, match=r"unknown thing 'jion' \(did you mean 'join'\?\); known: direct, join"):
        reg.get("jion")


def test_lazy_entry_is_visible_to_every_thread_while_it_imports(monkeypatch):
    """Threads asking for a lazy entry while another thread is importing it all get it
    (profiling several targets in parallel once failed with 'unknown student family')."""
    import edgekd.registry as registry_mod

    real = registry_mod.import_object

    def slow_import(ref):
        time.sleep(0.2)  # a slow first import, as torch-heavy modules are
        return real(ref)

    monkeypatch.setattr(registry_mod, "import_object", slow_import)
    reg = Registry("family")
    reg.register_lazy("join", "os.path:join")
    results, errors = [], []

    def worker():
        try:
            results.append(reg.get("join"))
        except BadInputError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
