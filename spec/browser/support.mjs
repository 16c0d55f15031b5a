// spec/browser/support.mjs - what the browser tests share: the server
// under test, run as a child process on a free port, and a sample app's
// page in headless Chromium.
//
// Env: MOONSOCKET_BIN (default build/moonsocket).

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import assert from "node:assert/strict";
import { before, after, test } from "node:test";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)),
  "../..");
export const SERVER_BIN = process.env.MOONSOCKET_BIN || "build/moonsocket";
const START_TIMEOUT = 10_000;   // ms for the server to print its port

// Spawns `SERVER_BIN app` from the repository's root with PORT=0 (and
// env) and resolves with the port it prints first ("moonsocket: listening
// on 127.0.0.1:<port>"), or rejects, with what it wrote to stderr, when
// it exits or stays silent too long.  The server: { child, port, stderr,
// exit (null while it runs), exited (a promise of exit) }.
export function startServer(app, env = {}) {
  const child = spawn(SERVER_BIN, [app], {
    cwd: ROOT,
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1",
      LUA_PATH: "lua/?.lua;lua/?/init.lua;;", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const server = { child, stderr: "", exit: null };
  server.exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      server.exit = { code, signal };
      resolve(server.exit);
    });
    child.on("error", (err) => {
      server.exit = { code: null, signal: null, error: err };
      resolve(server.exit);
    });
  });
  child.stdout.resume();
  child.stderr.setEncoding("utf8");

  return new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${SERVER_BIN} ${why}; stderr:\n${server.stderr}`));
    };
    const timer = setTimeout(() => fail("printed no port in 10 s"),
      START_TIMEOUT);
    child.stderr.on("data", (chunk) => {
      server.stderr += chunk;
      const found = /listening on ([\d.]+):(\d+)/.exec(server.stderr);
      if (found && server.port === undefined) {
        clearTimeout(timer);
        server.port = Number(found[2]);
        resolve(server);
      }
    });
    server.exited.then((exit) => {
      if (server.port === undefined) {
        fail(exit.error ? `failed to start: ${exit.error.message}`
          : `exited early (code ${exit.code}, signal ${exit.signal})`);
      }
    });
  });
}

// ------------------------------------------------- a sample in Chromium

export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const SHOTS = path.join(ROOT, "test-output", "browser");
export const TEST_TIMEOUT = 30_000;   // ms, for each test and hook
export const STEP_TIMEOUT = 10_000;   // ms, for one wait inside a test
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-quic",
  "--disable-sync",
];
export const SANITIZER_MARKS = ["ERROR: AddressSanitizer",
  "ERROR: LeakSanitizer", "runtime error:"];

// A sample app served on a free port and a headless Chromium, for one
// test file: registers the before and after hooks (none run when skip),
// and returns the session, whose server, browser and origin are set once
// the before hook has run.  session.openPage(contextOptions) opens the
// sample's page in a context of its own (another person) and records, in
// the session's lists, uncaught page errors, console errors and any
// request that leaves the server's origin (a WebSocket other than
// wsPath among them).
export function sampleSession(app, { env = {}, wsPath, skip, viewport }) {
  const session = {
    server: null, browser: null, origin: null,
    pageErrors: [],        // uncaught exceptions in the pages
    consoleErrors: [],     // console.error and browser-logged errors
    foreignRequests: [],   // any request that left the server's origin
  };
  before(async () => {
    if (skip) return;
    mkdirSync(SHOTS, { recursive: true });
    session.server = await startServer(app, env);
    session.origin = `http://127.0.0.1:${session.server.port}`;
    session.browser = await chromium.launch({
      executablePath: CHROMIUM_BIN,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: STEP_TIMEOUT,
    });
  }, { timeout: TEST_TIMEOUT });

  after(async () => {
    await session.browser?.close().catch(() => {});
    const server = session.server;
    if (server && server.exit === null) server.child.kill("SIGKILL");
  }, { timeout: TEST_TIMEOUT });

  session.openPage = async (contextOptions = {}) => {
    const { origin, server } = session;
    const context = await session.browser.newContext({
      viewport, ...contextOptions });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.on("pageerror", (err) => session.pageErrors.push(err.message));
    page.on("console", (msg) => {
      if (msg.type() === "error") session.consoleErrors.push(msg.text());
    });
    page.on("request", (request) => {
      const url = request.url();
      if (!url.startsWith(`${origin}/`) && !url.startsWith("data:")) {
        session.foreignRequests.push(url);
      }
    });
    page.on("websocket", (socket) => {
      if (socket.url() !== `ws://127.0.0.1:${server.port}${wsPath}`) {
        session.foreignRequests.push(socket.url());
      }
    });
    const response = await page.goto(`${origin}/`);
    assert.equal(response.status(), 200);
    return page;
  };
  return session;
}

// The two tests that end a sample's file, after its own: the pages ran
// clean (no script error, no request off the server), and the server
// exits 0 on SIGTERM with nothing from the sanitizers in its output.
export function sampleSessionEnds(session, options) {
  test("the pages ran clean: no script errors, no request off the server",
    options, async () => {
      assert.deepEqual(session.pageErrors, []);
      assert.deepEqual(session.foreignRequests, []);
      assert.deepEqual(session.consoleErrors, []);
    });

  test("the server stops on SIGTERM with exit code 0",
    options, async () => {
      const server = session.server;
      await session.browser.close();
      server.child.kill("SIGTERM");
      const timer = new Promise((resolve) =>
        setTimeout(() => resolve("timeout"), STEP_TIMEOUT));
      const exit = await Promise.race([server.exited, timer]);
      assert.notEqual(exit, "timeout",
        "server still running 10 s after SIGTERM");
      assert.deepEqual(exit, { code: 0, signal: null }, server.stderr);
      for (const mark of SANITIZER_MARKS) {
        assert.ok(!server.stderr.includes(mark), server.stderr);
      }
    });
}

// ------------------------------------------------- what a page shows

// Waits until check(await view(page)) holds, polling every interval ms
// for up to STEP_TIMEOUT; resolves with that view, or rejects with the
// last one seen, naming `what`.
export async function waitForView(view, page, what, check, interval = 50) {
  const deadline = Date.now() + STEP_TIMEOUT;
  let seen;
  for (;;) {
    seen = await view(page);
    if (check(seen)) return seen;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
  throw new Error(`${what} not shown: ${JSON.stringify(seen)}`);
}

// The pixels of the page's charts: charts maps a name to [canvas id,
// series colour names (CSS custom properties)].  For each name: drawn,
// how many of the canvas's pixels are not transparent, and for each
// series, how many opaque pixels are close to its colour.
export function chartPixels(page, charts) {
  return page.evaluate((charts) => {
    const rgb = (name) => {
      const probe = document.createElement("canvas").getContext("2d");
      probe.fillStyle = getComputedStyle(document.documentElement)
        .getPropertyValue(`--${name}`).trim();
      probe.fillRect(0, 0, 1, 1);
      return Array.from(probe.getImageData(0, 0, 1, 1).data.slice(0, 3));
    };
    const count = (id, colours) => {
      const canvas = document.getElementById(id);
      const { data } = canvas.getContext("2d")
        .getImageData(0, 0, canvas.width, canvas.height);
      const result = { drawn: 0 };
      for (const name of colours) result[name] = 0;
      const want = colours.map(rgb);
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] === 0) continue;
        result.drawn++;
        if (data[i + 3] < 200) continue;
        want.forEach((c, k) => {
          if (Math.abs(data[i] - c[0]) + Math.abs(data[i + 1] - c[1]) +
              Math.abs(data[i + 2] - c[2]) < 30) result[colours[k]]++;
        });
      }
      return result;
    };
    const result = {};
    for (const [name, [id, colours]] of Object.entries(charts)) {
      result[name] = count(id, colours);
    }
    return result;
  }, charts);
}
