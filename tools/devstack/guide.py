"""``make guide``: the video guide, a screencast of the real portal per language with captions and transcript."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from access_portal.i18n import LANGUAGES, gettext
from access_portal.settings import PortalSettings
from devinbox import DevInbox
from devstack.broker import PrivateBroker
from devstack.sample import convocation_event, publish, sample_pdf
from devstack.stack import ROOT, Stack

OUT = ROOT / "services/access-portal/access_portal/static/guide"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PHONE_WIDTH, PHONE_HEIGHT = 320, 568
# The guide page's own steps (templates/guide.html), so the captions say what the page says, in its catalogs.
STEPS = [
    "Open the e-mail from the hospital and click the link in it. Use the whole link: if part of it is missing,"
    " the page tells you.",
    "The first time, type your mobile number. The page shows how the number the hospital has on file ends.",
    "You receive a 6-digit code by SMS. Type it (or paste it, or let your phone fill it in). The code is valid"
    " for %(minutes)s minutes; you can ask for a new one.",
    "Your appointment is shown. Download the convocation (PDF), add it to your calendar, print it, or ask for"
    " it by post.",
]
PAUSE = 1.5  # seconds each screen stays still, long enough to read a caption's start


def debian_ffmpeg(directory: Path) -> None:
    """Playwright encodes the video with an ffmpeg of its own download; Debian's (apt-get install ffmpeg)
    stands in for it, found through a browsers directory of our own (Chromium is given by path anyway)."""
    import playwright

    browsers = Path(playwright.__file__).parent / "driver/package/browsers.json"
    revision = next(b["revision"] for b in json.loads(browsers.read_text())["browsers"] if b["name"] == "ffmpeg")
    (directory / f"ffmpeg-{revision}").mkdir(parents=True)
    (directory / f"ffmpeg-{revision}/ffmpeg-linux").symlink_to("/usr/bin/ffmpeg")
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = str(directory)


def caption_texts(language: str) -> list[str]:
    minutes = PortalSettings.model_fields["otp_ttl_seconds"].default // 60
    return [gettext(language, s, minutes=minutes) for s in STEPS]


def timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def webvtt(texts: list[str], starts: list[float], end: float) -> str:
    """One cue per step, from its start to the next step's (the last to the end of the video)."""
    cues = ["WEBVTT", ""]
    bounds = [*starts[1:], end]
    for i, (text, start, stop) in enumerate(zip(texts, starts, bounds, strict=True), 1):
        cues += [str(i), f"{timestamp(start)} --> {timestamp(max(stop, start + 0.5))}", text, ""]
    return "\n".join(cues)


def transcript(language: str, texts: list[str]) -> str:
    title = gettext(language, "How to open your convocation")
    return "\n".join([title, "", *(f"{i}. {t}" for i, t in enumerate(texts, 1)), ""])


async def record(inbox: DevInbox, amqp_url: str, exchange: str, language: str,
                 videos: str) -> tuple[str, list[float], float]:
    """Walk the three screens in a phone-sized Chromium; the video's path and when each step began."""
    from playwright.async_api import async_playwright

    email, digits = f"guide-{uuid.uuid4().hex[:8]}@example.ch", f"{uuid.uuid4().int % 10 ** 7:07d}"
    national = f"079 {digits[:3]} {digits[3:5]} {digits[5:]}"
    event = convocation_event(email=email, mobile=national, language=language, pdf=sample_pdf("Convocation"))
    await publish(amqp_url, exchange, event)
    mail = await inbox.inbox.await_email(lambda m: email in m["rcpt_tos"], timeout=30)
    # Chromium keeps Secure cookies from http://localhost (a secure context).
    link = next(u for u in mail["links"] if "/m/" in u).replace("://127.0.0.1:", "://localhost:")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT},
                                            record_video_dir=videos,
                                            record_video_size={"width": PHONE_WIDTH, "height": PHONE_HEIGHT},
                                            accept_downloads=True, locale=language)
        page = await context.new_page()
        t0 = time.monotonic()
        starts = [0.0]
        await page.goto(link)
        await page.wait_for_timeout(PAUSE * 1000)
        starts.append(time.monotonic() - t0)
        await page.get_by_label(gettext(language, "Mobile number")).press_sequentially(national, delay=40)
        await page.get_by_role("button", name=gettext(language, "Send me a code by SMS")).click()
        await page.wait_for_url(re.compile(r".*/code$"))
        starts.append(time.monotonic() - t0)
        e164 = "+4179" + digits
        for _ in range(300):
            if texts := [s for s in inbox.inbox.sms() if s["to"] == e164]:
                break
            await asyncio.sleep(0.1)
        found = re.search(r"#(\d{6})\b", texts[0]["body"])
        assert found, "the SMS carries no code"
        code = found.group(1)
        await page.get_by_label(gettext(language, "Code received by SMS")).press_sequentially(code, delay=60)
        await page.get_by_role("button", name=gettext(language, "Open my message")).click()
        await page.wait_for_url(re.compile(r".*/document$"))
        starts.append(time.monotonic() - t0)
        await page.wait_for_timeout(PAUSE * 1000)
        async with page.expect_download():
            await page.get_by_role("button", name=gettext(language, "Download the convocation (PDF)")).click()
        await page.wait_for_timeout(PAUSE * 1000)
        end = time.monotonic() - t0
        await context.close()
        await browser.close()
        assert page.video is not None  # record_video_dir was given
        return str(await page.video.path()), starts, end


def write(out: Path, language: str, video: str, starts: list[float], end: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"guide-{language}.webm").write_bytes(Path(video).read_bytes())
    texts = caption_texts(language)
    (out / f"guide-{language}.vtt").write_text(webvtt(texts, starts, end), encoding="utf-8")
    (out / f"guide-{language}.txt").write_text(transcript(language, texts), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=list(LANGUAGES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    suffix = uuid.uuid4().hex[:8]
    database, exchange = f"convocations_guide_{suffix}", "guide"
    psql = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"]
    broker = PrivateBroker("convocations-guide").start()  # its own RabbitMQ node, removed at the end
    amqp_url = broker.amqp_url()
    inbox = DevInbox().start()
    try:
        subprocess.run([str(ROOT / "scripts/db-setup.sh"), database], check=True, capture_output=True)
        with tempfile.TemporaryDirectory() as logs:
            debian_ffmpeg(Path(logs) / "playwright")
            stack = Stack(database=database, exchange=exchange, smtp_port=inbox.smtp_port,
                          sms_provider_url=inbox.twilio_base_url, sms_account_sid=inbox.account_sid,
                          sms_auth_token=inbox.auth_token, log_dir=Path(logs), amqp_url=amqp_url,
                          extra_env={"*": {"OUTBOX_POLL_SECONDS": "0.2"}})
            try:
                stack.start(["issuer", "mailer", "sms-gateway", "access-portal"])
                for language in args.languages:
                    write(args.out, language, *asyncio.run(record(inbox, amqp_url, exchange, language, logs)))
                    print(f"guide-{language}: {(args.out / f'guide-{language}.webm').stat().st_size} bytes")
            finally:
                stack.stop()
    finally:
        inbox.stop()
        subprocess.run([*psql, f'drop database if exists "{database}" with (force)'], capture_output=True)
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
