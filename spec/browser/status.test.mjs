// spec/browser/status.test.mjs - moonsocket.status, the live status
// page, in a real browser.
//
// Serves spec/apps/status.lua with the page at "/" (figures every 0.25
// s), opens it in headless Debian Chromium, and checks that its figures
// follow the traffic of a WebSocket client of the echo route (a minimal
// client over node:net, outside the page) and that the charts draw on
// their canvases in each series' colour: WebSockets open, messages/s in
// and out, back-pressure closes, the 99th percentile of the time in Lua
// callbacks.  The screenshot goes to test-output/browser/status.png.
//
//   npm install && node --test --test-reporter=tap spec/browser/
//
// Env: MOONSOCKET_BIN (default build/moonsocket), CHROMIUM_BIN (default
// /usr/bin/chromium).  Under BROWSER_TLS=1 every test is skipped: the
// app serves plain http only (echo.test.mjs covers https and wss).

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { SHOTS, TEST_TIMEOUT, sampleSession, sampleSessionEnds,
  waitForView, chartPixels } from "./support.mjs";

const TLS = process.env.BROWSER_TLS === "1";
const OPTIONS = { timeout: TEST_TIMEOUT, skip: TLS &&
  "the status app serves plain http only (echo.test.mjs covers wss)" };

const session = sampleSession("spec/apps/status.lua", {
  env: { STATUS_PATH: "/", STATUS_INTERVAL: "0.25" }, wsPath: "/",
  skip: OPTIONS.skip, viewport: { width: 1000, height: 900 } });
const { openPage } = session;
let tab;

// ------------------------------------------------ a WebSocket client

// Opens a WebSocket to path (RFC 6455: masked frames out, unmasked in);
// resolves with { send(text), receive(), close() } once upgraded.
function wsClient(port, target) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0), open = false;
    const waiting = [], arrived = [];
    const deliver = (payload) => {
      if (waiting.length) waiting.shift()(payload);
      else arrived.push(payload);
    };
    const frame = (opcode, data) => {
      const mask = randomBytes(4);
      assert.ok(data.length < 126);
      const out = Buffer.alloc(6 + data.length);
      out[0] = 0x80 | opcode;
      out[1] = 0x80 | data.length;
      mask.copy(out, 2);
      for (let i = 0; i < data.length; i++) out[6 + i] = data[i] ^ mask[i % 4];
      sock.write(out);
    };
    const client = {
      send: (text) => frame(1, Buffer.from(text)),
      receive: () => arrived.length ? Promise.resolve(arrived.shift())
        : new Promise((r) => waiting.push(r)),
      close: () => new Promise((r) => {
        sock.on("close", r);
        frame(8, Buffer.from([0x03, 0xe8]));        // 1000
        sock.end();
      }),
    };
    sock.on("error", reject);
    sock.on("connect", () => sock.write(`GET ${target} HTTP/1.1\r\n` +
      `Host: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!open) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!/^HTTP\/1\.1 101 /.test(head)) {
          reject(new Error(`no upgrade: ${head}`));
          return;
        }
        buf = buf.subarray(end + 4);
        open = true;
        resolve(client);
      }
      while (buf.length >= 2) {
        let len = buf[1] & 127, at = 2;
        if (len === 126) {
          if (buf.length < 4) break;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) break;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + len) break;
        const opcode = buf[0] & 15;
        const payload = buf.subarray(at, at + len).toString();
        buf = buf.subarray(at + len);
        if (opcode === 1 || opcode === 2) deliver(payload);
      }
    });
  });
}

// ------------------------------------------------ what the page shows

// The page's state and the figures of its "all" column (data-value:
// the number sent; null when the figure is null or not shown yet).
function view(page) {
  return page.evaluate(() => {
    const value = (key) => {
      const e = document.getElementById(`v-${key}`);
      return !e || e.dataset.value === "" ? null : Number(e.dataset.value);
    };
    return { state: document.getElementById("state").dataset.state,
      websockets: value("websockets"), in: value("messages_in_per_s"),
      out: value("messages_out_per_s"), p99: value("callback_p99_s"),
      backpressure: value("backpressure_closes"),
      heap: value("lua_heap_bytes") };
  });
}

const waitFor = (page, what, check) =>
  waitForView(view, page, what, check);

// For each chart, the pixels drawn in each of its series' colours.
const pixels = (page) => chartPixels(page, {
  connections: ["chart-connections", ["connections"]],
  messages: ["chart-messages", ["in", "out"]],
  backpressure: ["chart-backpressure", ["backpressure"]],
  p99: ["chart-p99", ["p99"]],
});

// ---------------------------------------------------------------- tests

test("the page goes live and shows the figures", OPTIONS, async () => {
  tab = await openPage();
  assert.equal(await tab.title(), "moonsocket status");
  const seen = await waitFor(tab, "live, its own socket open",
    (v) => v.state === "live" && v.websockets === 1);
  assert.equal(seen.in, 0);
  assert.equal(seen.backpressure, 0);
  assert.ok(seen.heap > 0, JSON.stringify(seen));
});

test("the figures and charts follow the messages as they flow",
  OPTIONS, async () => {
    const blank = await pixels(tab);
    assert.equal(blank.messages.in, 0, JSON.stringify(blank));
    const echo = await wsClient(session.server.port, "/echo");
    await waitFor(tab, "two WebSockets", (v) => v.websockets === 2);
    // echoes for a while: some call in 16 is timed in every sample
    let sent = 0;
    const until = Date.now() + 2000;
    while (Date.now() < until) {
      for (let i = 0; i < 20; i++) {
        echo.send(`m${sent}`);
        assert.equal(await echo.receive(), `m${sent}`);
        sent++;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const busy = await waitFor(tab, "messages in and out, a p99",
      (v) => v.in > 0 && v.out > 0 && v.p99 !== null && v.p99 > 0);
    assert.ok(busy.p99 < 1, JSON.stringify(busy));
    const drawn = await pixels(tab);
    for (const [chart, series] of [["connections", "connections"],
      ["messages", "in"], ["messages", "out"], ["p99", "p99"],
      ["backpressure", "backpressure"]]) {
      assert.ok(drawn[chart][series] > 20, `${chart} ${series}: ` +
        JSON.stringify(drawn));
    }
    await tab.screenshot({ path: path.join(SHOTS, "status.png"),
      fullPage: true });
    // once the traffic stops, so do the rates
    await echo.close();
    await waitFor(tab, "quiet, one WebSocket",
      (v) => v.websockets === 1 && v.in === 0);
  });

sampleSessionEnds(session, OPTIONS);
