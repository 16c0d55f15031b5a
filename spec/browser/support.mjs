// spec/browser/support.mjs - what the browser tests share: the server
// under test, run as a child process on a free port.
//
// Env: MOONSOCKET_BIN (default build/moonsocket).

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

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
