"""The development hospital system. It talks to the hospital gateway as a real one would: it sends its letters
as HL7 v2 over MLLP or as FHIR over HTTP (with a client-credentials token of the development OpenID provider),
receives what the gateway sends back (an MLLP listener for HL7 v2, a FHIR endpoint for Communication and
Task), and answers a request to send a letter again by sending that letter again, as a hospital system must
(docs/integration.md, "Statuses and requests back").

``python -m devstack.hospital hl7 FILE`` or ``fhir FILE`` sends a sample (docs/samples/) to a running gateway
(``make run``) and prints the answer. ``republished`` is kept for tests that play a hospital publishing our
JSON on the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hl7.mllp import open_hl7_connection, start_hl7_server

from devstack.stack import free_port
from shared.logs import get_logger

log = get_logger(__name__)
SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"


def republished(event: dict) -> dict:
    """The same convocation, published again on the bus: a new event id and time, the same convocation id."""
    return {**event, "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(timezone.utc).isoformat()}


def hl7_message(text: str, *, control_id: str | None = None) -> bytes:
    """A sample as it goes on the wire: segments ended by CR, a fresh MSH-10 unless one is given."""
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line]
    header = lines[0].split("|")
    header[9] = control_id or f"DEV-{uuid.uuid4().hex[:16].upper()}"
    lines[0] = "|".join(header)
    return ("\r".join(lines) + "\r").encode("utf-8")


def _parse_hl7(data: bytes) -> dict:
    """What the development hospital reads in an ORU^R01 from the gateway."""
    segments = {line[:3]: line.split("|") for line in data.decode("utf-8", "replace").split("\r") if line}
    msh, obr, obx = segments.get("MSH", []), segments.get("OBR", []), segments.get("OBX", [])
    return {
        "format": "hl7",
        "kind": "status" if "CONVOC-STATUS" in (obr[4] if len(obr) > 4 else "") else "request",
        "appointment_id": obr[2] if len(obr) > 2 else "",
        "code": (obx[5] if len(obx) > 5 else "").split("^")[0],
        "sandbox": len(msh) > 11 and msh[10] == "T",
        "control_id": msh[9] if len(msh) > 9 else "",
    }


def _parse_fhir(resource: dict) -> dict:
    about = (
        (resource.get("about") or [{}])[0] if resource["resourceType"] == "Communication" else resource.get("focus", {})
    )
    code = (
        (resource.get("category") or [{}])[0]
        if resource["resourceType"] == "Communication"
        else resource.get("reasonCode", {})
    )
    return {
        "format": "fhir",
        "kind": "status" if resource["resourceType"] == "Communication" else "request",
        "appointment_id": about.get("identifier", {}).get("value", ""),
        "code": (code.get("coding") or [{}])[0].get("code", ""),
        "sandbox": any(s.get("code") == "HTEST" for s in resource.get("meta", {}).get("security", [])),
    }


class DevHospital:
    """Runs in a background thread until ``stop``. ``received`` lists what the gateway sent back, newest last."""

    def __init__(
        self,
        *,
        gateway_host: str = "127.0.0.1",
        gateway_mllp_port: int = 2575,
        gateway_url: str = "http://127.0.0.1:8005",
        token_url: str = "http://127.0.0.1:8030/token",  # noqa: S107
        client: tuple[str, str] = ("his-gateway", "dev-his-gateway-secret"),
        mllp_port: int = 0,
        http_port: int = 0,
        verify: object = True,
    ) -> None:
        self.gateway_host, self.gateway_mllp_port, self.gateway_url = gateway_host, gateway_mllp_port, gateway_url
        self.token_url, self.client, self.verify = token_url, client, verify
        self.mllp_port, self.http_port = mllp_port or free_port(), http_port or free_port()
        self.received: list[dict] = []
        self.letters: dict[str, tuple[str, object]] = {}  # appointment id -> ('hl7', text) or ('fhir', resource)
        self.answered = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dev-hospital", daemon=True)
        self._server: uvicorn.Server | None = None
        self._mllp: asyncio.AbstractServer | None = None

    @property
    def fhir_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/fhir"

    # --- what the gateway sends back ------------------------------------------------------------

    def app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/fhir/{kind}")
        async def receive(kind: str, request: Request):
            resource = json.loads(await request.body())
            if kind not in ("Communication", "Task") or resource.get("resourceType") != kind:
                return JSONResponse(
                    {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported"}]},
                    status_code=400,
                )
            await self._received(_parse_fhir(resource))
            return JSONResponse(
                {**resource, "id": uuid.uuid4().hex}, status_code=201, media_type="application/fhir+json"
            )

        return app

    async def _on_mllp(self, reader, writer) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                data = await reader.readblock()
                notice = _parse_hl7(data)
                writer.writeblock(
                    f"MSH|^~\\&|DEV_HIS||CONVOCATIONS||{datetime.now(timezone.utc):%Y%m%d%H%M%S}||ACK|"
                    f"A{uuid.uuid4().hex[:12]}|P|2.5.1\rMSA|AA|{notice['control_id']}\r".encode()
                )
                await writer.drain()
                await self._received(notice)
        writer.close()

    async def _received(self, notice: dict) -> None:
        self.received.append(notice)
        if notice["kind"] == "request":
            asyncio.get_running_loop().create_task(self._send_again(notice["appointment_id"]))

    async def _send_again(self, appointment_id: str) -> None:
        """A request to send a letter again: the same appointment, sent again (a new message id)."""
        letter = self.letters.get(appointment_id)
        if letter is None:
            log.warning("request to send again a letter this hospital never sent; ignored")
            return
        kind, content = letter
        if kind == "hl7":
            await self._send_hl7(str(content))
        else:
            await self._send_fhir(content, "Appointment")  # type: ignore[arg-type]
        self.answered += 1
        log.info("letter sent again through the gateway", format=kind)

    def statuses(self, appointment_id: str) -> list[str]:
        return [n["code"] for n in self.received if n["appointment_id"] == appointment_id and n["kind"] == "status"]

    # --- sending letters --------------------------------------------------------------------------

    async def _send_hl7(self, text: str, control_id: str | None = None) -> bytes:
        reader, writer = await open_hl7_connection(self.gateway_host, self.gateway_mllp_port, limit=32 * 1024 * 1024)
        try:
            writer.writeblock(hl7_message(text, control_id=control_id))
            await writer.drain()
            return await asyncio.wait_for(reader.readblock(), 30)
        finally:
            writer.close()

    async def _token(self) -> str:
        async with httpx.AsyncClient(timeout=10, verify=self.verify) as http:  # type: ignore[arg-type]
            response = await http.post(self.token_url, data={"grant_type": "client_credentials"}, auth=self.client)
            return response.raise_for_status().json()["access_token"]

    async def _send_fhir(self, resource: dict, path: str, request_id: str | None = None) -> httpx.Response:
        headers = {
            "authorization": f"Bearer {await self._token()}",
            "content-type": "application/fhir+json",
            **({"x-request-id": request_id} if request_id else {}),
        }
        async with httpx.AsyncClient(timeout=30, verify=self.verify) as http:  # type: ignore[arg-type]
            return await http.post(
                f"{self.gateway_url}/fhir/{path}".replace("/fhir/Bundle", "/fhir"),
                content=json.dumps(resource),
                headers=headers,
            )

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def send_hl7(self, text: str, *, control_id: str | None = None) -> str:
        """Send an SIU message (remembered for a request to send it again); returns the ACK as text."""
        appointment = next(
            (
                line.split("|")[1].split("^")[0]
                for line in text.replace("\r", "\n").split("\n")
                if line.startswith("SCH|")
            ),
            None,
        )
        if appointment:
            self.letters[appointment] = ("hl7", text)
        return self._run(self._send_hl7(text, control_id)).decode("utf-8", "replace")

    def send_fhir(self, resource: dict, *, request_id: str | None = None) -> httpx.Response:
        """POST an Appointment (remembered) or a Bundle; returns the gateway's answer."""
        if resource["resourceType"] == "Appointment":
            identifier = (resource.get("identifier") or [{}])[0].get("value") or resource.get("id")
            self.letters[str(identifier)] = ("fhir", resource)
        return self._run(self._send_fhir(resource, resource["resourceType"], request_id))

    # --- process ----------------------------------------------------------------------------------

    def start(self) -> DevHospital:
        self._thread.start()

        async def up() -> None:
            self._mllp = await start_hl7_server(self._on_mllp, "127.0.0.1", self.mllp_port, limit=1024 * 1024)
            config = uvicorn.Config(
                self.app(),
                host="127.0.0.1",
                port=self.http_port,
                log_config=None,
                log_level="warning",
                access_log=False,
            )
            self._server = uvicorn.Server(config)
            self._loop.create_task(self._server.serve())
            for _ in range(250):  # uvicorn has no event to wait for; at most 5 s
                if self._server.started:
                    return
                await asyncio.sleep(0.02)

        self._run(up())
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self._server is not None:
                self._server.should_exit = True
            if self._mllp is not None:
                self._mllp.close()
            await asyncio.sleep(0.2)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self._run(down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> DevHospital:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hospital_systems(hospital: DevHospital, *, hl7_port: int, sandbox_port: int) -> list[dict]:
    """The gateway's HOSPITAL_SYSTEMS for development and tests: the development hospital as two systems, one
    speaking HL7 v2 both ways, one FHIR both ways, and the integrators' sandbox (HL7 or FHIR in, FHIR back)."""
    from hospital_gateway.settings import DEV_SYSTEMS

    hl7, sandbox = (dict(s) for s in DEV_SYSTEMS)
    fhir = {**hl7, "id": "dev-his-fhir", "name": "Development hospital system (FHIR)", "mllp_port": None}
    hl7 |= {
        "mllp_port": hl7_port,
        "oauth_client_id": None,
        "outbound": {"format": "hl7", "host": "127.0.0.1", "port": hospital.mllp_port},
    }
    fhir |= {"outbound": {"format": "fhir", "url": hospital.fhir_url}}
    sandbox |= {"mllp_port": sandbox_port, "outbound": {"format": "fhir", "url": hospital.fhir_url}}
    return [hl7, fhir, sandbox]


def main() -> int:
    parser = argparse.ArgumentParser(description="Send a sample to the hospital gateway of `make run`.")
    parser.add_argument("format", choices=["hl7", "fhir"])
    parser.add_argument("file", type=Path, help=f"e.g. {SAMPLES.relative_to(SAMPLES.parents[1])}/siu-s12.hl7")
    parser.add_argument("--port", type=int, default=2575, help="the gateway's MLLP port for the system (HL7)")
    parser.add_argument("--url", default="http://127.0.0.1:8005", help="the gateway (FHIR)")
    parser.add_argument("--client", default="his-gateway:dev-his-gateway-secret", help="FHIR client id:secret")
    parser.add_argument("--keep-control-id", action="store_true", help="send MSH-10 as written (a repeat)")
    args = parser.parse_args()
    client_id, _, secret = args.client.partition(":")
    hospital = DevHospital(gateway_mllp_port=args.port, gateway_url=args.url, client=(client_id, secret))
    text = args.file.read_text(encoding="utf-8")
    if args.format == "hl7":
        control_id = text.split("\n", 1)[0].split("|")[9] if args.keep_control_id else None
        ack = asyncio.run(hospital._send_hl7(text, control_id))
        print(ack.decode("utf-8", "replace").replace("\r", "\n"))
    else:
        response = asyncio.run(hospital._send_fhir(json.loads(text), json.loads(text)["resourceType"]))
        print(response.status_code, json.dumps(response.json(), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
