// spec/browser/game.test.mjs - the game sample page in a real browser.
//
// Starts the game sample (examples/game/app.lua) on a free port, opens
// its page in headless Debian Chromium, and moves the player's dot with
// the arrow keys and WASD: the position the page shows changes, and the
// canvas has the player's colour where the dot now is.  A second page
// sees the first one's dot.  Screenshots go to test-output/browser/.
//
//   npm install && node --test --test-reporter=tap spec/browser/
//
// Env: MOONSOCKET_BIN (default build/moonsocket), CHROMIUM_BIN (default
// /usr/bin/chromium).  Under BROWSER_TLS=1 every test is skipped: the
// game sample serves plain http only, and echo.test.mjs covers
// https and wss over examples/tls.

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SHOTS, TEST_TIMEOUT, sampleSession, sampleSessionEnds,
  waitForView } from "./support.mjs";

const TLS = process.env.BROWSER_TLS === "1";
// every test, skipped under BROWSER_TLS=1 (see above)
const OPTIONS = { timeout: TEST_TIMEOUT, skip: TLS &&
  "the game sample serves plain http only (echo.test.mjs covers wss)" };

const session = sampleSession("examples/game/app.lua", { env: {},
  wsPath: "/play", skip: OPTIONS.skip, viewport: { width: 900, height: 900 } });
const { openPage } = session;
let tab;

// The state, and the position and player count the page shows.
function view(page) {
  return page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const me = $("me").dataset;
    return { state: $("state").dataset.state,
      id: me.id === undefined ? null : Number(me.id),
      x: me.x === undefined ? null : Number(me.x),
      y: me.y === undefined ? null : Number(me.y),
      players: Number($("players").dataset.count ?? 0) };
  });
}

const waitFor = (page, what, check) =>
  waitForView(view, page, what, check, 20);

// Whether the canvas pixel at world point (x, y) has the colour of the
// CSS variable --name.
function pixelIs(page, x, y, name) {
  return page.evaluate(([px, py, css]) => {
    const probe = document.createElement("canvas").getContext("2d");
    probe.fillStyle = getComputedStyle(document.documentElement)
      .getPropertyValue(`--${css}`).trim();
    probe.fillRect(0, 0, 1, 1);
    const want = probe.getImageData(0, 0, 1, 1).data;
    const got = document.getElementById("field").getContext("2d")
      .getImageData(px, py, 1, 1).data;
    return [0, 1, 2].every((i) => Math.abs(got[i] - want[i]) < 10);
  }, [x, y, name]);
}

// Holds key for ms, then lets it go.
async function hold(page, key, ms) {
  await page.keyboard.down(key);
  await new Promise((resolve) => setTimeout(resolve, ms));
  await page.keyboard.up(key);
}

// ---------------------------------------------------------------- tests

test("the page joins and draws the dot in the middle",
  OPTIONS, async () => {
    tab = await openPage();
    assert.equal(await tab.title(), "moonsocket game");
    const seen = await waitFor(tab, "playing", (v) =>
      v.state === "open" && v.x !== null);
    assert.deepEqual([seen.x, seen.y, seen.players], [320, 240, 1]);
    assert.ok(await pixelIs(tab, 320, 240, "me"), "no dot at 320, 240");
    assert.ok(await pixelIs(tab, 100, 100, "field"), "the field is not blank");
  });

test("arrow keys and WASD move the dot", OPTIONS, async () => {
    await tab.focus("#field");
    await hold(tab, "ArrowRight", 500);
    const right = await waitFor(tab, "moved right", (v) => v.x > 340);
    assert.equal(right.y, 240);
    // it stops when the key is let go
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stopped = await view(tab);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(await view(tab), stopped);
    assert.ok(await pixelIs(tab, stopped.x, stopped.y, "me"),
      `no dot at ${stopped.x}, ${stopped.y}`);
    assert.ok(!(await pixelIs(tab, 320, 240, "me")), "the old dot stayed");

    await hold(tab, "s", 300);
    const down = await waitFor(tab, "moved down", (v) => v.y > 250);
    assert.equal(down.x, stopped.x);
    await hold(tab, "a", 300);
    await waitFor(tab, "moved left", (v) => v.x < stopped.x);
    await hold(tab, "w", 300);
    await waitFor(tab, "moved up", (v) => v.y < down.y);
  });

test("another player sees the dot move", OPTIONS, async () => {
    const other = await openPage();
    await waitFor(other, "two players", (v) => v.players === 2);
    const before = await view(tab);
    assert.ok(await pixelIs(other, before.x, before.y, "other"),
      "the first player's dot is not drawn on the second page");
    await tab.focus("#field");
    await hold(tab, "ArrowUp", 400);
    const moved = await waitFor(tab, "moved up", (v) => v.y < before.y);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const now = await view(tab);
    assert.ok(now.y <= moved.y);
    assert.ok(await pixelIs(other, now.x, now.y, "other"),
      `the second page has no dot at ${now.x}, ${now.y}`);
    await tab.screenshot({ path: path.join(SHOTS, "game.png"),
      fullPage: true });
    await other.context().close();
    await waitFor(tab, "one player again", (v) => v.players === 1);
  });

sampleSessionEnds(session, OPTIONS);
