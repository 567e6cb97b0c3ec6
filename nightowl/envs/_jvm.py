"""One JVM per process for each Java-backed engine (TextWorld-Express, ScienceWorld).

Both engines ship a jar with a py4j ``PythonInterface``. Their own Python wrappers start
a JVM per environment object; nightowl starts one per engine per process, on first use,
and every adapter instance creates its own interface object on it. The JVM dies with
the process (``die_on_exit``) and is shut down cleanly at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from typing import Any

from nightowl.errors import EnvError


class SharedJVM:
    """A lazily started, process-wide py4j gateway to one jar (restarted if it died)."""

    def __init__(self, name: str, jar: str, cwd: str, javaopts: list[str]) -> None:
        self.name = name
        self.jar = jar
        self.cwd = cwd
        self.javaopts = javaopts
        self._gateway: Any = None
        self._lock = threading.Lock()
        #: serialises engine calls: py4j is thread-safe, the simulators are not
        self.engine_lock = threading.RLock()
        atexit.register(self.shutdown)

    def gateway(self) -> Any:
        """The running gateway (starting the JVM the first time)."""
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

        with self._lock:
            if self._gateway is not None and self._gateway.java_process.poll() is None:
                return self._gateway
            try:
                port, proc = launch_gateway(
                    classpath=self.jar,
                    die_on_exit=True,
                    cwd=self.cwd,
                    javaopts=self.javaopts,
                    return_proc=True,
                )
            except Exception as exc:  # no java, unreadable jar
                raise EnvError(f"{self.name}: cannot start its JVM: {exc}") from exc
            self._gateway = JavaGateway(
                gateway_parameters=GatewayParameters(auto_field=True, port=port),
                java_process=proc,
            )
            return self._gateway

    def shutdown(self) -> None:
        """Stop the JVM (best effort; called at exit)."""
        with self._lock:
            gw, self._gateway = self._gateway, None
        if gw is not None:
            with contextlib.suppress(Exception):  # the JVM may already be gone
                gw.shutdown()
