"""Checks every page must pass: axe-core's WCAG 2.2 AA rules (no serious or critical finding) and no
sideways scroll, with a full-page screenshot kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

from pathlib import Path

from live_pages import ready
from playwright.sync_api import Page

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """async () => {
  const result = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] } });
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
}"""
WIDTH = """() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth,
  wide: [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
    .slice(0, 5).map((e) => e.tagName + '#' + e.id + '.' + e.className) })"""


def check_page(page: Page, label: str) -> list[str]:
    """axe-core's serious and critical WCAG 2.2 AA findings on the page as shown, and horizontal scroll."""
    ready(page)
    page.wait_for_timeout(300)  # what the page draws after it says it is ready (the chat's first frames)
    problems = []
    if page.evaluate("() => typeof axe === 'undefined'"):
        page.evaluate(AXE.read_text())
    for violation in page.evaluate(AXE_RUN):
        problems.append(f"{label}: {violation['id']} ({violation['impact']}): {violation['help']} at {violation['nodes']}")
    width = page.evaluate(WIDTH)
    if width["scroll"] > width["width"]:
        problems.append(f"{label}: scrolls sideways ({width['scroll']} > {width['width']} px): {width['wide']}")
    page.screenshot(path=str(artifact(f"page-{label}.png")), full_page=True)
    return problems
