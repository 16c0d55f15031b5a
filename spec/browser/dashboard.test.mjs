// spec/browser/dashboard.test.mjs - the dashboard sample page in a real
// browser.
//
// Starts the dashboard sample (examples/dashboard/app.lua) on a free port
// with two workers, opens its page in headless Debian Chromium, and
// checks that the figures show and the charts draw: the canvases hold
// pixels of each series' colour after a few seconds.  A second page
// counts as a connection, and its button as messages.  Screenshots go to
// test-output/browser/.
//
//   npm install && node --test --test-reporter=tap spec/browser/
//
// Env: MOONSOCKET_BIN (default build/moonsocket), CHROMIUM_BIN (default
// /usr/bin/chromium).  Under BROWSER_TLS=1 every test is skipped: the
// dashboard sample serves plain http only, and echo.test.mjs covers
// https and wss over examples/tls.

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SHOTS, TEST_TIMEOUT, sampleSession, sampleSessionEnds,
  waitForView, chartPixels } from "./support.mjs";

const TLS = process.env.BROWSER_TLS === "1";
// every test, skipped under BROWSER_TLS=1 (see above)
const OPTIONS = { timeout: TEST_TIMEOUT, skip: TLS &&
  "the dashboard sample serves plain http only (echo.test.mjs covers wss)" };

const session = sampleSession("examples/dashboard/app.lua", { env: { WORKERS: "2" },
  wsPath: "/live", skip: OPTIONS.skip, viewport: { width: 1000, height: 900 } });
const { openPage } = session;
let tab;

// The state and the figures the page shows (data-value: the number).
function view(page) {
  return page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const value = (id) => $(id).dataset.value === undefined ||
      $(id).dataset.value === "" ? null : Number($(id).dataset.value);
    return { state: $("state").dataset.state,
      connections: value("connections"), rate: value("rate"),
      messages: value("messages"), workers: value("workers") };
  });
}

const waitFor = (page, what, check) =>
  waitForView(view, page, what, check);

// How many pixels of each canvas are drawn (not transparent), and how
// many are close to each series' colour.
const pixels = (page) => chartPixels(page, {
  live: ["live-chart", ["connections", "rate"]],
  total: ["total-chart", ["messages"]],
});

// ---------------------------------------------------------------- tests

test("the page connects and shows the figures of both workers",
  OPTIONS, async () => {
    tab = await openPage();
    assert.equal(await tab.title(), "moonsocket dashboard");
    const seen = await waitFor(tab, "two workers and one connection",
      (v) => v.state === "open" && v.workers === 2 && v.connections === 1);
    assert.equal(seen.rate, 0);
    assert.ok(seen.messages >= 0);
  });

test("the charts draw the last seconds on the canvases",
  OPTIONS, async () => {
    const blank = await pixels(tab);
    // a few seconds of history make a line of each series (one second is
    // an eleven-pixel step)
    await new Promise((resolve) => setTimeout(resolve, 4500));
    const drawn = await pixels(tab);
    assert.ok(drawn.live.drawn > blank.live.drawn / 2 && drawn.live.drawn >
      1000, JSON.stringify(drawn));
    assert.ok(drawn.live.connections > 20, JSON.stringify(drawn));
    assert.ok(drawn.live.rate > 20, JSON.stringify(drawn));
    assert.ok(drawn.total.messages > 20, JSON.stringify(drawn));
  });

test("another page counts as a connection, its button as messages",
  OPTIONS, async () => {
    const before = await view(tab);
    const other = await openPage();
    await waitFor(other, "connected", (v) => v.state === "open");
    await waitFor(tab, "two connections", (v) => v.connections === 2);
    for (let i = 0; i < 5; i++) await other.click("#bump");
    const after = await waitFor(tab, "five more messages",
      (v) => v.messages === before.messages + 5);
    assert.equal(after.connections, 2);
    await waitFor(tab, "a rate above 0", (v) => v.rate > 0);
    await tab.screenshot({ path: path.join(SHOTS, "dashboard.png"),
      fullPage: true });
    await other.context().close();
    await waitFor(tab, "one connection again", (v) => v.connections === 1);
  });

test("in the dark scheme the charts draw in its colours",
  OPTIONS, async () => {
    const dark = await openPage({ colorScheme: "dark" });
    await waitFor(dark, "figures", (v) => v.workers === 2);
    await new Promise((resolve) => setTimeout(resolve, 4500));
    const drawn = await pixels(dark);
    assert.ok(drawn.live.connections > 20, JSON.stringify(drawn));
    await dark.screenshot({ path: path.join(SHOTS, "dashboard-dark.png"),
      fullPage: true });
    await dark.context().close();
  });

sampleSessionEnds(session, OPTIONS);
