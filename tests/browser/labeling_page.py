"""Label Studio 1.23's labeling page, driven the way an annotator drives it (Playwright, sync API).

Everything here is a mouse or keyboard action on what the annotator sees: toggles in the bottom
bar, the settings dialog, the smart-tool group (revealed by hovering it), label chips, clicks and
drags on the image, accept and Submit. The page's own store (``window.Htx``) is only *read*: to
time when a mask reaches the canvas and to say what went wrong.

Coordinates: the test speaks natural-image pixels (``backend.prompts`` frame). The page shows the
image as an ``<img alt="image">`` scaled (and possibly offset) inside ``.lsf-image``; a pixel maps
to the screen through that element's bounding box, and the point must fall inside the visible
container.
"""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, Response, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

# The smart tool a labels control gets, as its button's aria-label in the smart-tool group.
SMART_TOOL_OF_CONTROL = {"RectangleLabels": "rectangle-tool", "KeyPointLabels": "key-point-tool"}
SCREENSHOT_WIDTH = 1000
ANSWER_TIMEOUT_MS = 180_000  # the first SAM prompt on an image computes its embedding (~20-40 s on 2 cores)

# Installed before the page's scripts: the time of the annotator's last pointer release.
_RECORD_POINTER_UP = """
window.__lastPointerUp = 0;
window.addEventListener('pointerup', () => { window.__lastPointerUp = performance.now(); }, true);
"""

# Every brush mask or polygon on screen or offered as a suggestion, as "id:rle length" or "id:points";
# changes when one comes.
_MASK_SIGNATURE = """
() => {
  const annotation = window.Htx.annotationStore.selected;
  const items = [...annotation.regions, ...annotation.suggestions.values()];
  return items.filter((r) => r.type === 'brushregion' || r.type === 'polygonregion')
              .map((r) => `${r.id}:${r.rle ? r.rle.length : (r.points ? r.points.length : 0)}`).sort().join('|');
}
"""

# Resolves, two frames after the mask signature differs from `before`, with ms since the last pointer up.
_WAIT_FOR_MASK = """
([before, timeoutMs]) => new Promise((resolve, reject) => {
  const signature = %s;
  const deadline = performance.now() + timeoutMs;
  const tick = () => {
    if (signature() !== before) {
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - window.__lastPointerUp)));
    } else if (performance.now() > deadline) {
      reject(new Error('no new mask on the page within ' + timeoutMs + ' ms'));
    } else {
      requestAnimationFrame(tick);
    }
  };
  tick();
})
""" % _MASK_SIGNATURE.strip()


@dataclass
class Exchange:
    """One /interactive-annotating call: what the page sent and what came back."""

    sent: dict
    answer: dict | None = None
    status: int | None = None


@dataclass
class LabelingPage:
    """A logged-in page on one Label Studio, for one labeling config."""

    page: Page
    base_url: str
    label_config: str
    exchanges: list[Exchange] = field(default_factory=list)
    saved_drafts: list[str] = field(default_factory=list)  # bodies of the draft saves the server accepted

    def __post_init__(self):
        self.page.add_init_script(_RECORD_POINTER_UP)
        self.page.on("request", self._on_request)
        self.page.on("response", self._on_response)
        root = ElementTree.fromstring(self.label_config)
        self._labels_controls = [el for el in root.iter() if el.tag.endswith("Labels")]

    # -- network log ------------------------------------------------------------------------------

    def _on_request(self, request) -> None:
        if "/interactive-annotating" in request.url:
            self.exchanges.append(Exchange(sent=json.loads(request.post_data or "{}")))

    def _on_response(self, response: Response) -> None:
        if "draft" in response.url and response.request.method in ("POST", "PATCH", "PUT") and response.ok:
            self.saved_drafts.append(response.request.post_data or "")
        if "/interactive-annotating" in response.url:
            exchange = next((e for e in reversed(self.exchanges) if e.status is None), None)
            if exchange is not None:
                exchange.status = response.status
                try:
                    exchange.answer = response.json()
                except Exception:  # the page's request may be gone (navigation) before the body is read
                    exchange.answer = None

    def exchange_log(self, last: int = 6) -> str:
        """The last calls, shortened (RLEs as their length), for failure messages."""
        def shorten(value):
            if isinstance(value, dict):
                return {k: (f"<{len(v)} ints>" if k == "rle" else shorten(v)) for k, v in value.items()}
            if isinstance(value, list):
                return [shorten(v) for v in value]
            return value
        return "\n".join(json.dumps({"sent": shorten(e.sent), "status": e.status, "answer": shorten(e.answer)})
                         for e in self.exchanges[-last:])

    # -- session and task -------------------------------------------------------------------------

    def login(self, email: str, password: str) -> None:
        self.page.goto(f"{self.base_url}/user/login/")
        if "/user/login" not in self.page.url:
            return  # the browser context is logged in already (another test module's page)
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(lambda url: "/user/login" not in url)

    def open_task(self, project: int, task: int) -> None:
        """The task in the project's Data Manager, with its labeling page loaded and the image decoded."""
        self.page.goto(f"{self.base_url}/projects/{project}/data?task={task}")
        self.page.wait_for_function(
            "() => { const img = document.querySelector('.lsf-image img[alt=image]');"
            " return !!(img && img.complete && img.naturalWidth"
            " && window.Htx && window.Htx.annotationStore.selected); }",
            timeout=60_000)
        self.page.wait_for_timeout(500)  # the stage settles its size after the image decodes

    # -- bottom bar and settings ------------------------------------------------------------------

    def _toggle(self, test_id: str, on: bool) -> None:
        toggle = self.page.locator(f"input[data-testid={test_id}]")
        for _ in range(3):  # a click while the page is still settling after loading can get lost
            if toggle.is_checked() == on:
                break
            toggle.click(force=True)  # the input sits under its styled indicator
            self.page.wait_for_timeout(300)
        expect(toggle).to_be_checked(checked=on)

    def set_auto_annotation(self, on: bool) -> None:
        self._toggle("bottombar-auto-annotation-toggle", on)

    def set_auto_accept(self, on: bool) -> None:
        self._toggle("bottombar-auto-accept-toggle", on)

    def set_setting(self, title: str, on: bool) -> None:
        """A switch in the gear button's "Labeling Interface Settings" dialog."""
        self.open_settings()
        row = self.page.locator("label.lsf-settings__field", has_text=title)
        switch = row.locator("input[type=checkbox]")
        for _ in range(3):  # a click during the dialog's opening animation can get lost
            if switch.is_checked() == on:
                break
            row.click()
            self.page.wait_for_timeout(300)
        expect(switch).to_be_checked(checked=on)
        self.close_settings()

    def off_screen(self) -> list[str]:
        """The image and the labels controls (by name) not wholly inside the window: what the
        annotator would have to scroll to."""
        size = self.page.viewport_size
        parts = {"image": self.page.locator(".lsf-image img[alt=image]")}
        rows = self.page.locator(".lsf-labels")
        parts.update({control.get("name"): rows.nth(index) for index, control in enumerate(self._labels_controls)})
        outside = []
        for name, locator in parts.items():
            box = locator.bounding_box()
            if (box is None or box["x"] < 0 or box["y"] < 0 or box["x"] + box["width"] > size["width"]
                    or box["y"] + box["height"] > size["height"]):
                outside.append(name)
        return outside

    # -- tools and labels -------------------------------------------------------------------------

    def choose(self, control: str, label: str) -> None:
        """The smart tool of labels control ``control``, then its ``label`` chip (in this order: picking
        a label first selects the control's plain tool, and switching tools can drop the label)."""
        tag = self._control(control).tag
        tool = SMART_TOOL_OF_CONTROL[tag]
        nth = [c.get("name") for c in self._labels_controls if c.tag == tag].index(control)
        self.hover_smart_tools()
        self.page.locator(f"button.lsf-tool_smart[aria-label={tool}]").nth(nth).click()
        row = [c.get("name") for c in self._labels_controls].index(control)
        chip = self.page.locator(".lsf-labels").nth(row).locator(".lsf-label", has_text=label)
        if "lsf-label_selected" not in (chip.get_attribute("class") or ""):
            chip.click()  # a click on a selected chip would unselect it
        assert "lsf-label_selected" in (chip.get_attribute("class") or ""), f'label "{label}" of {control} not selected'
        self.page.mouse.move(0, 0)  # close the tool group

    def _control(self, name: str):
        for control in self._labels_controls:
            if control.get("name") == name:
                return control
        raise KeyError(f"no labels control named {name!r} in the labeling config")

    # -- drawing ----------------------------------------------------------------------------------

    def _screen(self, x: float, y: float) -> tuple[float, float]:
        """Screen position of natural-image pixel position (x, y)."""
        size = self.page.evaluate(
            "() => { const img = document.querySelector('.lsf-image img[alt=image]');"
            " return [img.naturalWidth, img.naturalHeight]; }")
        shown = self.page.locator(".lsf-image img[alt=image]").bounding_box()
        visible = self.page.locator(".lsf-image").first.bounding_box()
        x, y = float(x), float(y)
        sx, sy = shown["x"] + x * shown["width"] / size[0], shown["y"] + y * shown["height"] / size[1]
        inside = (visible["x"] <= sx <= visible["x"] + visible["width"]
                  and visible["y"] <= sy <= visible["y"] + visible["height"])
        assert inside, f"image pixel ({x:.1f}, {y:.1f}) is outside the visible part of the image on screen"
        return sx, sy

    def click(self, x: float, y: float, modifier: str | None = None) -> None:
        """A click at image pixel (x, y), holding ``modifier`` if given: "Alt" makes a smart point
        negative; "Control" places a point on top of a mask (a plain click there selects the mask);
        "Alt+Control" both."""
        sx, sy = self._screen(x, y)
        keys = modifier.split("+") if modifier else []
        self.page.mouse.move(sx, sy)
        for key in keys:
            self.page.keyboard.down(key)
        self.page.mouse.down()
        self.page.mouse.up()
        for key in reversed(keys):
            self.page.keyboard.up(key)

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """A drag from image pixel (x0, y0) to (x1, y1), as when drawing a rectangle."""
        self.page.mouse.move(*self._screen(x0, y0))
        self.page.mouse.down()
        self.page.mouse.move(*self._screen(x1, y1), steps=8)
        self.page.mouse.up()

    def answered(self, action) -> Exchange:
        """Runs ``action`` (one click or drag) and waits for the backend's answer to reach the page
        (which applies it a moment later: check the page with ``wait_for_counts``)."""
        with self.page.expect_response(lambda r: "/interactive-annotating" in r.url, timeout=ANSWER_TIMEOUT_MS):
            action()
        exchange = self.exchanges[-1]
        assert exchange.status == 200 and exchange.answer and "errors" not in exchange.answer, self.exchange_log()
        return exchange

    def mask_signature(self) -> str:
        return self.page.evaluate(_MASK_SIGNATURE)

    def timed_until_mask(self, action) -> float:
        """Runs ``action`` (the last click or drag) and returns the seconds from its pointer release
        until a new or changed mask is on the canvas (two frames after the page's store has it)."""
        before = self.mask_signature()
        action()
        ms = self.page.evaluate(_WAIT_FOR_MASK, [before, ANSWER_TIMEOUT_MS])
        return ms / 1000.0

    # -- what the page holds ----------------------------------------------------------------------

    def regions(self) -> list[dict]:
        """(type, labels, dynamic, readonly) of every region on screen, from the page's store."""
        return self.page.evaluate(
            "() => window.Htx.annotationStore.selected.regions.map((r) => ({id: r.cleanId, type: r.type,"
            " labels: r.labels, dynamic: r.dynamic, readonly: r.readonly}))")

    def suggestion_count(self) -> int:
        return self.page.evaluate("() => window.Htx.annotationStore.selected.suggestions.size")

    def wait_for_counts(self, points: int | None = None, masks: int | None = None, suggestions: int | None = None,
                        polygons: int | None = None, timeout_ms: int = 10_000) -> None:
        """Waits until the page shows this many points, masks and polygons and offers this many
        suggestions (None: any); fails with what it has and the last backend calls."""
        expected = {"keypointregion": points, "brushregion": masks, "polygonregion": polygons,
                    "suggestions": suggestions}
        expected = {key: value for key, value in expected.items() if value is not None}
        counts = """(expected) => {
            const annotation = window.Htx.annotationStore.selected;
            const counts = {suggestions: annotation.suggestions.size, keypointregion: 0, brushregion: 0,
                            polygonregion: 0};
            annotation.regions.forEach((r) => { counts[r.type] = (counts[r.type] || 0) + 1; });
            return Object.entries(expected).every(([key, value]) => counts[key] === value);
        }"""
        try:
            self.page.wait_for_function(counts, arg=expected, timeout=timeout_ms)
        except Exception:
            raise AssertionError(f"expected {expected} on the page, it has {self.regions()} and "
                                 f"{self.suggestion_count()} suggestion(s)\n{self.exchange_log()}") from None

    def accept_suggestions(self) -> None:
        self.page.click("[data-testid=bottombar-accept-suggestions-button]")
        self.page.wait_for_function("() => window.Htx.annotationStore.selected.suggestions.size === 0")

    def wait_for_draft_with(self, region_id: str, timeout_s: float = 20.0) -> None:
        """Waits until the page has autosaved a draft holding region ``region_id`` (it saves at most
        every 5 s); the backend sees the annotator's screen through that draft."""
        deadline = time.monotonic() + timeout_s
        while not any(region_id in body for body in self.saved_drafts):
            assert time.monotonic() < deadline, f"no draft with region {region_id} saved within {timeout_s:g} s"
            self.page.wait_for_timeout(200)

    def submit(self) -> int:
        """Submit (or Update, for a task already submitted); returns the saved annotation's id."""
        button = self.page.locator("button[aria-label='Submit current annotation'], "
                                   "button[aria-label='Update current annotation']").first
        with self.page.expect_response(
                lambda r: "/annotations" in r.url and r.request.method in ("POST", "PATCH")) as saved:
            button.click()
        response = saved.value
        assert response.ok, f"saving the annotation failed: HTTP {response.status}"
        return int(response.json()["id"])

    def screenshot(self, path: Path, selector: str = ".lsf-wrapper") -> None:
        """A PNG of the element ``selector`` (default: the labeling page without Label Studio's menu
        and task list), at most SCREENSHOT_WIDTH px wide and in 256 colours, to keep docs/ small."""
        path.parent.mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(self.page.locator(selector).first.screenshot())).convert("RGB")
        if shot.width > SCREENSHOT_WIDTH:
            shot = shot.resize((SCREENSHOT_WIDTH, round(shot.height * SCREENSHOT_WIDTH / shot.width)), Image.LANCZOS)
        shot.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)

    def hover_smart_tools(self) -> None:
        """Opens the smart-tool group, as the mouse does on its way to a tool."""
        self.page.hover("button.lsf-tool_smart:not([aria-label])")

    def open_settings(self) -> None:
        self.page.click("button[aria-label=Settings]")
        self.page.locator(".ant-modal-content").wait_for()

    def close_settings(self) -> None:
        fields = self.page.locator("label.lsf-settings__field").first
        for _ in range(3):  # as with the switches, a click during the dialog's animation can get lost
            self.page.click(".ant-modal-close")
            try:
                fields.wait_for(state="hidden", timeout=5000)
                return
            except PlaywrightTimeout:
                pass
        fields.wait_for(state="hidden")
