"""A real browser against stage 3: headless Chromium loads the sample site and we look at what
it rendered (the DOM, and the pixels of a screenshot) and at what it asked the server for.

This is the end-to-end check that the Content-Types are right for a browser: a stylesheet
served with the wrong type is ignored (the page would not be blue), a PNG that arrives
corrupted does not draw (the logo would be missing from the pixels).

Needs a Chromium binary (Debian: the ``chromium`` package; the CI setup installs it); the
tests skip, saying so, only when none is found. ``$LAB_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import requests

from conftest import SAMPLE_TYPES, STAGE3

#: Every Chromium run is bounded by this many seconds.
BROWSER_TIMEOUT = 60
#: www/style.css paints the body (and so the canvas) with this colour.
BODY_BLUE = (0x1E, 0x6F, 0xBF)
#: How far (per channel) a pixel may be from BODY_BLUE and still count as it.
COLOUR_TOLERANCE = 12
#: At least this fraction of the 800x600 screenshot must be the body colour (about 0.9 when
#: the stylesheet applies; text and the logo take the rest; 0 with no stylesheet: white).
MIN_BLUE_FRACTION = 0.5


def find_chromium() -> str | None:
    candidates = [os.environ.get("LAB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary (looked for $LAB_CHROMIUM, /usr/bin/chromium, chromium, "
           "chromium-browser, google-chrome): apt-get install chromium",
)


def run_chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Runs headless Chromium with a fresh profile; its whole process group is killed if it
    outlives BROWSER_TIMEOUT (or leaves helpers behind)."""
    profile = tmp_path / f"chromium-{name}"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
        "--force-device-scale-factor=1", *args,
    ]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s: {command}\n"
                    f"stderr tail: {err.decode(errors='replace')[-2000:]}", pytrace=False)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers it may have left in its group
        except ProcessLookupError:
            pass
    (tmp_path / f"chromium-{name}.stderr").write_bytes(err)
    assert proc.returncode == 0, (
        f"chromium exited with {proc.returncode}: {command}\nstderr tail: "
        f"{err.decode(errors='replace')[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


# --------------------------------------------------------------------------------------------
# PNG decoding (zlib + struct): 8-bit, non-interlaced greyscale/RGB/RGBA, all five filters
# --------------------------------------------------------------------------------------------


class Image:
    """Decoded pixels: ``pixel(x, y)`` → (r, g, b)."""

    def __init__(self, data: bytes):
        assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
        pos, idat, header = 8, [], None
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            chunk = data[pos + 8:pos + 8 + length]
            pos += 12 + length
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", chunk)
            elif kind == b"IDAT":
                idat.append(chunk)
            elif kind == b"IEND":
                break
        assert header, "PNG without IHDR"
        self.width, self.height, depth, colour, _, _, interlace = header
        assert depth == 8 and interlace == 0 and colour in (0, 2, 4, 6), f"unsupported PNG {header}"
        self.channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        self.rows = unfilter(zlib.decompress(b"".join(idat)), self.width * self.channels,
                             self.height, self.channels)

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        row, i = self.rows[y], x * self.channels
        if self.channels < 3:
            return row[i], row[i], row[i]
        return row[i], row[i + 1], row[i + 2]


def unfilter(raw: bytes, stride: int, height: int, bpp: int) -> list[bytes]:
    """Undoes PNG's per-row filters (None, Sub, Up, Average, Paeth)."""
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            assert kind == 0, f"bad PNG filter type {kind} in row {y}"
        rows.append(bytes(line))
        prev = line
    return rows


def near(colour, target, tolerance: int = COLOUR_TOLERANCE) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, target))


def find_image(shot: Image, logo: Image, tolerance: int = 24, max_misses: float = 0.02):
    """Where @p logo appears 1:1 in @p shot, or None.

    Anchors on the logo's first pixel that differs from its top-left one (the corner of the
    white "L"): every screenshot pixel of that colour whose left and upper neighbours match
    the logo's is a candidate origin, verified pixel by pixel.
    """
    first = logo.pixel(0, 0)
    ax, ay = next((x, y) for y in range(logo.height) for x in range(logo.width)
                  if not near(logo.pixel(x, y), first, tolerance))
    anchor = logo.pixel(ax, ay)
    left = logo.pixel(ax - 1, ay) if ax else None
    above = logo.pixel(ax, ay - 1) if ay else None
    allowed = int(logo.width * logo.height * max_misses)
    for y in range(ay, shot.height - logo.height + ay + 1):
        for x in range(ax, shot.width - logo.width + ax + 1):
            if not near(shot.pixel(x, y), anchor, tolerance):
                continue
            if left and not near(shot.pixel(x - 1, y), left, tolerance):
                continue
            if above and not near(shot.pixel(x, y - 1), above, tolerance):
                continue
            ox, oy, misses = x - ax, y - ay, 0
            for ly in range(logo.height):
                for lx in range(logo.width):
                    if not near(shot.pixel(ox + lx, oy + ly), logo.pixel(lx, ly), tolerance):
                        misses += 1
                if misses > allowed:
                    break
            if misses <= allowed:
                return ox, oy
    return None


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.fixture
def stage3(servers, site):
    return servers(STAGE3, site.root, "-maxclient", "12", "-maxtotal", "60")


def test_rendered_dom_has_heading_image_and_script_result(stage3, tmp_path):
    result = run_chromium(tmp_path, "dom", "--dump-dom", stage3.url + "index.html")
    dom = result.stdout.decode("utf-8", "replace")
    assert "<h1>Sample site for the lab kit</h1>" in dom, dom[:2000]
    assert re.search(r'<img src="logo\.png"[^>]*alt="Lab kit logo"', dom), dom[:2000]
    # app.js rewrote this paragraph: served as JavaScript, and run.
    assert "app.js ran:" in dom, "app.js did not run: " + dom[-1500:]


def test_screenshot_shows_stylesheet_colour_and_logo(stage3, site, tmp_path):
    shot_path = tmp_path / "shot.png"
    run_chromium(tmp_path, "shot", f"--screenshot={shot_path}", "--window-size=800,600",
                 stage3.url + "index.html")
    assert shot_path.is_file(), "chromium wrote no screenshot"
    shot = Image(shot_path.read_bytes())
    assert (shot.width, shot.height) == (800, 600), (shot.width, shot.height)
    blue = sum(near(shot.pixel(x, y), BODY_BLUE) for y in range(shot.height) for x in range(shot.width))
    fraction = blue / (shot.width * shot.height)
    assert fraction >= MIN_BLUE_FRACTION, (
        f"only {fraction:.1%} of the screenshot is style.css's body colour #1e6fbf "
        f"(top-left pixel {shot.pixel(5, 5)}): the stylesheet was not applied; see {shot_path}")
    logo = Image(site.bytes_of("logo.png"))
    where = find_image(shot, logo)
    assert where is not None, f"logo.png is not drawn in the screenshot {shot_path}"


def test_browser_fetched_subresources_with_right_types(stage3, site, tmp_path):
    run_chromium(tmp_path, "log", "--dump-dom", stage3.url + "index.html")
    log = stage3.log_lines()
    for name in ("index.html", "style.css", "logo.png", "app.js"):
        pattern = re.compile(rf'"GET /{re.escape(name)} HTTP/1\.[01]" 200 {len(site.bytes_of(name))}$')
        assert any(pattern.search(line) for line in log), f"no 200 for /{name} in the access log:\n" + "\n".join(log)
    # What the browser was told each file is: the kit's exact Content-Types.
    for name in ("style.css", "logo.png", "app.js"):
        reply = requests.get(stage3.url + name, timeout=10)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == SAMPLE_TYPES[name], (name, reply.headers)
        assert reply.content == site.bytes_of(name)
