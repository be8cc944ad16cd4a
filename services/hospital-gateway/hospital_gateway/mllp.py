"""MLLP listeners, one per hospital system (its own port), TLS optional and mutual TLS when the system's CA
is configured; each message gets exactly one acknowledgement, whatever happens (python-hl7's framing)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable

from hl7.mllp import InvalidBlockError, open_hl7_connection, start_hl7_server

from hospital_gateway import hl7v2
from hospital_gateway.booking import Problem
from hospital_gateway.intake import Accepted, Intake, Unavailable, count
from hospital_gateway.settings import GatewaySettings, HospitalSystem
from shared.logs import get_logger

log = get_logger(__name__)


async def handle(intake: Intake, system: HospitalSystem, data: bytes) -> bytes:
    """One HL7 message -> its ACK (AA, AE or AR); never raises."""
    started = time.perf_counter()
    try:
        m = hl7v2.decode(data, system)
    except hl7v2.Refused as refused:
        count(system.id, "hl7", "rejected", started)
        log.info("hl7 message rejected", system=system.id, where=refused.problem.where, problem=refused.problem.code)
        return hl7v2.bare_ack("AR", refused.problem)
    outcome, code, problems, text = "accepted", "AA", [], ""
    try:
        action = hl7v2.check_header(m, system)
        if action is None:
            outcome, text = "ignored", "event not acted on: acknowledged and ignored"
        else:
            b = hl7v2.booking(m, system, action)
            [done] = await intake.submit(system, [(b, m.control_id)], "hl7")
            problems, text = b.warnings, _said(done)
            outcome = "duplicate" if done.duplicate else "accepted"
    except hl7v2.Refused as refused:
        outcome, code, problems = "rejected", "AR", [refused.problem]
    except Problem as problem:
        outcome, code, problems = "refused", "AE", [problem]
    except Unavailable:
        outcome, code = "unavailable", "AR"
        problems = [Problem("MSH-10", "internal", "the message could not be stored now; send it again (same MSH-10)")]
    except Exception:  # a bug must still get an answer, and must not end the connection
        log.exception("hl7 message failed", system=system.id)
        outcome, code = "unavailable", "AR"
        problems = [Problem("MSH", "internal", "unexpected error; send the message again later")]
    count(system.id, "hl7", outcome, started)
    if outcome not in ("accepted", "duplicate"):
        log.info(
            "hl7 message not accepted",
            system=system.id,
            ack=code,
            outcome=outcome,
            problems=[f"{p.where} {p.code}" for p in problems],
        )
    try:
        return hl7v2.ack(m, code, problems, text)
    except Exception:  # e.g. a header python-hl7 cannot build an ACK from
        return hl7v2.bare_ack(
            code if code != "AA" else "AR",
            problems[0] if problems else Problem("MSH", "internal", "cannot build the acknowledgement"),
        )


def _said(done: Accepted) -> str:
    if done.duplicate:
        return "duplicate: this MSH-10 was accepted before; nothing was done again"
    if done.already_cancelled:
        return "already cancelled"
    return ""


def server_context(settings: GatewaySettings, system: HospitalSystem) -> ssl.SSLContext | None:
    if not (settings.mllp_tls_cert_file and settings.mllp_tls_key_file):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.mllp_tls_cert_file, settings.mllp_tls_key_file)
    if system.mllp_client_ca:  # mutual TLS: only the system's certificates get in
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(system.mllp_client_ca)
    return context


class Listeners:
    """The MLLP servers of every system that has a port."""

    def __init__(self, settings: GatewaySettings, on_message: Callable[[HospitalSystem, bytes], Awaitable[bytes]]):
        self.settings, self.on_message = settings, on_message
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        for system in self.settings.hospital_systems:
            if system.mllp_port is None:
                continue
            server = await start_hl7_server(
                self._connection(system),
                self.settings.mllp_host,
                system.mllp_port,
                limit=self.settings.mllp_max_bytes,
                ssl=server_context(self.settings, system),
            )
            self.servers.append(server)
            log.info(
                "mllp listener started",
                system=system.id,
                port=system.mllp_port,
                tls=self.settings.mllp_tls_cert_file is not None,
                client_certificates=bool(system.mllp_client_ca),
            )

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.connections):  # a message being handled finishes (its ACK is written first)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 10)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def _connection(self, system: HospitalSystem):
        async def serve(reader, writer) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.connections.add(task)
            try:
                while True:
                    try:
                        block = await asyncio.wait_for(reader.readblock(), self.settings.mllp_idle_seconds)
                    except ValueError:  # larger than MLLP_MAX_BYTES: the rest of the stream cannot be trusted
                        writer.writeblock(
                            hl7v2.bare_ack(
                                "AR",
                                Problem("MSH", "invalid", f"message larger than {self.settings.mllp_max_bytes} bytes"),
                            )
                        )
                        await writer.drain()
                        break
                    except InvalidBlockError:
                        writer.writeblock(
                            hl7v2.bare_ack(
                                "AR", Problem("MSH", "segment", "not MLLP framed: each message starts with VT (0x0B)")
                            )
                        )
                        await writer.drain()
                        break
                    writer.writeblock(await self.on_message(system, block))
                    await writer.drain()
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
                pass  # the peer closed, went silent or failed its handshake
            finally:
                if task is not None:
                    self.connections.discard(task)
                writer.close()

        return serve


async def send(
    host: str,
    port: int,
    message: bytes,
    *,
    seconds: float,
    context: ssl.SSLContext | None = None,
    limit: int = 1024 * 1024,
) -> bytes:
    """One message over MLLP and the acknowledgement it gets (a new connection each time; ``seconds`` to
    connect, and as much for the answer)."""
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(host, port, limit=limit, ssl=context, server_hostname=host if context else None), seconds
    )
    try:
        writer.writeblock(message)
        await writer.drain()
        return await asyncio.wait_for(reader.readblock(), seconds)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
