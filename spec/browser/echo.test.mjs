// spec/browser/echo.test.mjs - the echo sample page in a real browser.
//
// Starts the echo sample (examples/echo/app.lua) on a free port, opens its
// page (public/, served by moonsocket at /) in headless Debian Chromium
// through playwright-core, and drives it as a person would: connect, send,
// a 1 MiB echo, close, a path with no route.  Screenshots go to
// test-output/browser/.
//
//   npm install && node --test --test-reporter=tap spec/browser/
//
// Env: MOONSOCKET_BIN (default build/moonsocket), CHROMIUM_BIN (default
// /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { ROOT, startServer as startApp } from "./support.mjs";

const CHROMIUM_BIN = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "test-output", "browser");
const TEST_TIMEOUT = 30_000;   // ms, for each test and hook
const STEP_TIMEOUT = 10_000;   // ms, for one wait inside a test
const ONE_MIB = 1024 * 1024;
// BROWSER_TLS=1: the same test over https and wss (examples/tls, with
// the self-signed certificate it makes in a temporary folder): the page
// over HTTP/2, its WebSocket a stream of the page's connection.
const TLS = process.env.BROWSER_TLS === "1";
const APP = TLS ? "examples/tls/app.lua" : "examples/echo/app.lua";
const HTTP = TLS ? "https" : "http";
const WS = TLS ? "wss" : "ws";
const SUFFIX = TLS ? "-tls" : "";
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-quic",
  "--disable-sync", ...(TLS ? ["--ignore-certificate-errors"] : []),
];

// ------------------------------------------------------------ the server

// The echo sample (or examples/tls) on free ports, its page from public/.
function startServer() {
  return startApp(APP, { TLS_PORT: "0",
    CERT_DIR: path.join(os.tmpdir(), `moonsocket-browser-${process.pid}`),
    PUBLIC_DIR: "public" });
}

// ------------------------------------------------------------- fixtures

let server;
let browser;
let page;
let origin;
const pageErrors = [];      // uncaught exceptions in the page
const consoleErrors = [];   // console.error and browser-logged errors
const foreignRequests = []; // any request that left the server's origin

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  server = await startServer();
  origin = `${HTTP}://127.0.0.1:${server.port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM_BIN,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: STEP_TIMEOUT,
  });
  page = await newPage({ viewport: { width: 1100, height: 900 } });
}, { timeout: TEST_TIMEOUT });

after(async () => {
  await browser?.close().catch(() => {});
  if (server && server.exit === null) server.child.kill("SIGKILL");
}, { timeout: TEST_TIMEOUT });

async function newPage(contextOptions) {
  const context = await browser.newContext(contextOptions);
  const tab = await context.newPage();
  tab.setDefaultTimeout(STEP_TIMEOUT);
  tab.on("pageerror", (err) => pageErrors.push(err.message));
  tab.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  tab.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith("data:")) {
      foreignRequests.push(url);
    }
  });
  return tab;
}

// ------------------------------------------------------------- helpers

const entries = (tab, kind) =>
  tab.locator(`#log .entry[data-kind="${kind}"]`);

// Waits for #state to show STATE (and TEXT, when given); on a timeout the
// error says what the page showed instead, and the log.
async function expectState(tab, state, text) {
  try {
    await tab.waitForFunction(([want, wantText]) => {
      const label = document.getElementById("state");
      return label.dataset.state === want &&
        (wantText === null || label.textContent === wantText);
    }, [state, text ?? null], { timeout: STEP_TIMEOUT });
  } catch (err) {
    const seen = await tab.evaluate(() => ({
      state: document.getElementById("state").dataset.state,
      text: document.getElementById("state").textContent,
      log: Array.from(document.querySelectorAll("#log .entry"),
        (entry) => entry.textContent),
    })).catch(() => null);
    throw new Error(`state ${state} ${JSON.stringify(text ?? "")} not ` +
      `shown: ${JSON.stringify(seen, null, 1)}`, { cause: err });
  }
}

async function buttons(tab) {
  return tab.evaluate(() => ({
    connect: !document.getElementById("connect").disabled,
    send: !document.getElementById("send").disabled,
    close: !document.getElementById("close").disabled,
    urlReadOnly: document.getElementById("url").readOnly,
  }));
}

// Sends what the message box holds and waits for one more receive entry;
// returns the new send and receive entries' text.
async function sendAndAwaitEcho(tab, how = "click") {
  const before = await entries(tab, "receive").count();
  if (how === "enter") await tab.press("#message", "Enter");
  else await tab.click("#send");
  await tab.waitForFunction(
    (n) => document.querySelectorAll('#log .entry[data-kind="receive"]')
      .length > n, before, { timeout: STEP_TIMEOUT });
  return {
    sent: await entries(tab, "send").last().textContent(),
    received: await entries(tab, "receive").last().textContent(),
    rtt: await entries(tab, "receive").last().getAttribute("data-rtt"),
  };
}

// ---------------------------------------------------------------- tests

test("the page loads from moonsocket, ready to connect",
  { timeout: TEST_TIMEOUT }, async () => {
    const response = await page.goto(`${origin}/`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()["content-type"] ?? "", /^text\/html/);
    await expectState(page, "ready", "Ready to connect…");
    assert.equal(await page.inputValue("#url"),
      `${WS}://127.0.0.1:${server.port}/ws`);
    assert.deepEqual(await buttons(page),
      { connect: true, send: false, close: false, urlReadOnly: false });
    assert.equal(await page.locator("#log .entry").count(), 0);
    assert.equal(await page.title(), "moonsocket echo");
  });

test("Connect opens the socket and logs the URL",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.click("#connect");
    await expectState(page, "open", "Open");
    assert.deepEqual(await buttons(page),
      { connect: false, send: true, close: true, urlReadOnly: true });
    const open = entries(page, "open");
    assert.equal(await open.count(), 1);
    assert.match(await open.textContent(),
      new RegExp(`Connected to ${WS}://127\\.0\\.0\\.1:${server.port}/ws`));
    if (TLS) {
      // the page came over HTTP/2 (ALPN h2), and its WebSocket as an
      // extended CONNECT (RFC 8441) on a stream of that connection: the
      // server logs it so
      assert.equal(await page.evaluate(() => performance
        .getEntriesByType("navigation")[0].nextHopProtocol), "h2");
      const line = /open 127\.0\.0\.1 \/ws over HTTP\/2\n/;
      for (let i = 0; i < 100 && !line.test(server.stderr); i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.match(server.stderr, line);
    }
  });

test("a message is echoed, with its size and round trip",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.fill("#message", "Hello moonsocket");
    const echo = await sendAndAwaitEcho(page);
    assert.match(echo.sent, /Text, 16 bytes.*Hello moonsocket$/);
    assert.match(echo.received,
      /Text, 16 bytes, round trip \d+\.\d ms.*Hello moonsocket$/);
    assert.ok(Number(echo.rtt) >= 0, `round trip ${echo.rtt}`);
    assert.equal(await page.inputValue("#message"), "");
    const last = await page.evaluate(() => window.__lastReceived);
    assert.equal(last.kind, "text");
    assert.equal(last.data, "Hello moonsocket");
  });

test("Enter sends; sizes count UTF-8 bytes",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.fill("#message", "héllo 🌙");   // 1+2+1+1+1+1+4 bytes
    const echo = await sendAndAwaitEcho(page, "enter");
    assert.match(echo.sent, /Text, 11 bytes.*héllo 🌙$/);
    assert.match(echo.received, /Text, 11 bytes, round trip .*héllo 🌙$/);
  });

test("message text is shown as text, never run as HTML",
  { timeout: TEST_TIMEOUT }, async () => {
    const attack = '<img src="x" onerror="window.__xss = 1"><b>bold</b>';
    await page.fill("#message", attack);
    const echo = await sendAndAwaitEcho(page);
    assert.ok(echo.received.endsWith(attack), echo.received);
    assert.equal(await page.locator("#log img, #log b").count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
  });

test("a 1 MiB message comes back intact",
  { timeout: TEST_TIMEOUT }, async () => {
    // 1,048,576 UTF-16 units of ASCII, 2- and 3-byte characters (no
    // surrogate pair to cut in half at the end).
    const bytes = await page.evaluate((size) => {
      const unit = "moonsocket échos € 0123456789 ";
      const text = unit.repeat(Math.ceil(size / unit.length)).slice(0, size);
      window.__bigMessage = text;
      document.getElementById("message").value = text;
      return new TextEncoder().encode(text).length;
    }, ONE_MIB);
    assert.ok(bytes > ONE_MIB, `${bytes} bytes`);
    const echo = await sendAndAwaitEcho(page);
    const shown = bytes.toLocaleString("en-US");
    assert.match(echo.sent, new RegExp(`Text, ${shown} bytes`));
    assert.match(echo.received,
      new RegExp(`Text, ${shown} bytes, round trip \\d+\\.\\d ms`));
    assert.ok(echo.received.endsWith(`… (${shown} bytes)`), echo.received);
    const check = await page.evaluate(() => ({
      length: window.__lastReceived.data.length,
      bytes: window.__lastReceived.bytes,
      intact: window.__lastReceived.data === window.__bigMessage,
    }));
    assert.deepEqual(check, { length: ONE_MIB, bytes, intact: true });
  });

test("Close Socket closes with 1000 and the reason",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.click("#close");
    await expectState(page, "closed",
      "Closed (code 1000: Closing from client)");
    const close = entries(page, "close");
    assert.equal(await close.count(), 1);
    assert.equal(await close.getAttribute("data-code"), "1000");
    assert.equal(await close.getAttribute("data-was-clean"), "true");
    assert.equal(await close.getAttribute("data-sent-reason"),
      "Closing from client");
    // The server's reply echoes the code; RFC 6455 5.5.1 leaves echoing
    // the reason to the server (moonsocket sends none), so take either.
    const reason = await close.getAttribute("data-reason");
    assert.ok(["", "Closing from client"].includes(reason), reason);
    assert.match(await close.textContent(), new RegExp("Code 1000" +
      `${reason ? ": " + reason : ""}, wasClean true; ` +
      "we sent 1000: Closing from client$"));
    assert.deepEqual(await buttons(page),
      { connect: true, send: false, close: false, urlReadOnly: false });
    assert.equal(await entries(page, "error").count(), 0);
    // The log is in event order: open, then send/receive pairs, then close.
    const kinds = await page.$$eval("#log .entry", (list) =>
      list.map((entry) => entry.dataset.kind));
    assert.deepEqual(kinds, ["open",
      ...Array(4).fill(["send", "receive"]).flat(), "close"]);
    await page.screenshot({ path: path.join(SHOTS, `echo${SUFFIX}.png`),
      fullPage: true });
  });

test("a path with no route logs an error and an abnormal close",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.click("#clear-log");
    assert.equal(await page.locator("#log .entry").count(), 0);
    const url = `${WS}://127.0.0.1:${server.port}/nope`;
    await page.fill("#url", url);
    await page.click("#connect");
    await expectState(page, "error", "Error (code 1006)");
    assert.match(await entries(page, "error").textContent(),
      new RegExp(`Could not connect to ${url.replace(/\./g, "\\.")}`));
    const close = entries(page, "close");
    assert.equal(await close.getAttribute("data-code"), "1006");
    assert.equal(await close.getAttribute("data-was-clean"), "false");
    assert.deepEqual(await buttons(page),
      { connect: true, send: false, close: false, urlReadOnly: false });
    // Chromium reports the refused upgrade on the console: that is the
    // server's 404, as expected; nothing else may be there.
    const refused = consoleErrors.filter((text) => text.includes("/nope"));
    assert.ok(refused.some((text) => /404/.test(text)),
      consoleErrors.join("\n"));
  });

test("the page recovers: a new socket to /ws works after the failure",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.fill("#url", `${WS}://127.0.0.1:${server.port}/ws`);
    await page.click("#connect");
    await expectState(page, "open", "Open");
    await page.fill("#message", "again");
    const echo = await sendAndAwaitEcho(page);
    assert.match(echo.received, /round trip .*again$/);
    await page.click("#close");
    await expectState(page, "closed");
  });

test("a malformed URL is reported, not thrown",
  { timeout: TEST_TIMEOUT }, async () => {
    await page.fill("#url", "ftp://127.0.0.1/ws");
    await page.click("#connect");
    await expectState(page, "error", "Error");
    assert.match(await entries(page, "error").last().textContent(),
      /Cannot connect to ftp:\/\/127\.0\.0\.1\/ws: /);
    assert.deepEqual(await buttons(page),
      { connect: true, send: false, close: false, urlReadOnly: false });
  });

test("on a phone-sized screen, in the dark scheme",
  { timeout: TEST_TIMEOUT }, async () => {
    for (const [scheme, file] of [["light", `echo-phone${SUFFIX}.png`],
      ["dark", `echo-dark${SUFFIX}.png`]]) {
      const phone = await newPage({ viewport: { width: 390, height: 844 },
        isMobile: true, hasTouch: true, deviceScaleFactor: 2,
        colorScheme: scheme });
      await phone.goto(`${origin}/`);
      await phone.click("#connect");
      await expectState(phone, "open", "Open");
      for (const text of ["Hello from a phone", "x".repeat(300)]) {
        await phone.fill("#message", text);
        await sendAndAwaitEcho(phone);
      }
      // Nothing wider than the screen: no sideways scrolling.
      const overflow = await phone.evaluate(() =>
        document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
      await phone.screenshot({ path: path.join(SHOTS, file), fullPage: true });
      await phone.context().close();
    }
  });

test("the page ran clean: no script errors, no request off the server",
  { timeout: TEST_TIMEOUT }, async () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(foreignRequests, []);
    const unexpected = consoleErrors.filter((text) => !text.includes("/nope"));
    assert.deepEqual(unexpected, []);
  });

test("the server stops on SIGTERM with exit code 0",
  { timeout: TEST_TIMEOUT }, async () => {
    await browser.close();
    server.child.kill("SIGTERM");
    const timer = new Promise((resolve) =>
      setTimeout(() => resolve("timeout"), STEP_TIMEOUT));
    const exit = await Promise.race([server.exited, timer]);
    assert.notEqual(exit, "timeout", "server still running 10 s after SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, server.stderr);
  });
