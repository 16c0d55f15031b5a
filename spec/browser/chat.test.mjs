// spec/browser/chat.test.mjs - the chat sample page in a real browser.
//
// Starts the chat sample (examples/chat/app.lua) on a free port and opens
// its page in several headless Debian Chromium contexts at once, one per
// person: two join a room and talk, a third in another room hears none
// of it, people switch rooms, leave with the button and by closing the
// tab.  One page loses its connection ("Disconnect network": the server
// cuts the socket off) while the other writes, and shows every message
// it missed once, in order, marked as recovered.  Screenshots go to
// test-output/browser/.
//
//   npm install && node --test --test-reporter=tap spec/browser/
//
// Env: MOONSOCKET_BIN (default build/moonsocket), CHROMIUM_BIN (default
// /usr/bin/chromium).  Under BROWSER_TLS=1 every test is skipped: the
// chat sample serves plain http only, and echo.test.mjs covers https and
// wss over examples/tls.

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { SHOTS, STEP_TIMEOUT, TEST_TIMEOUT,
  sampleSession, sampleSessionEnds } from "./support.mjs";

const TLS = process.env.BROWSER_TLS === "1";
// every test, skipped under BROWSER_TLS=1 (see above)
const OPTIONS = { timeout: TEST_TIMEOUT, skip: TLS &&
  "the chat sample serves plain http only (echo.test.mjs covers wss)" };

const session = sampleSession("examples/chat/app.lua", { env: {},
  wsPath: "/chat", skip: OPTIONS.skip, viewport: { width: 1000, height: 800 } });
const { openPage } = session;
const people = {};          // name -> its page, each in its own context

// ------------------------------------------------------------- helpers

// What the page shows: state, room, count, members and the log.
function view(tab) {
  return tab.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const line = (entry) => {
      const who = entry.querySelector(".who");
      const text = entry.querySelector(".text").textContent;
      return `${entry.dataset.kind}${entry.dataset.mine ? "*" : ""}: ` +
        (who ? `${who.textContent}: ${text}` : text);
    };
    return {
      state: $("state").dataset.state,
      stateText: $("state").textContent,
      title: $("room-title").textContent,
      count: $("count").textContent,
      members: Array.from($("members").children, (li) =>
        (li.dataset.me ? "*" : "") + li.textContent),
      log: Array.from($("log").children, line),
      recovered: Array.from($("log").querySelectorAll("[data-recovered]"),
        line),
    };
  });
}

// Waits until check(view) holds; on a timeout the error shows the view.
async function waitFor(tab, what, check) {
  const deadline = Date.now() + STEP_TIMEOUT;
  let seen;
  for (;;) {
    seen = await view(tab);
    if (check(seen)) return seen;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`${what} not shown: ${JSON.stringify(seen, null, 1)}`);
}

const waitForLog = (tab, line) =>
  waitFor(tab, JSON.stringify(line), (seen) => seen.log.includes(line));

async function buttons(tab) {
  return tab.evaluate(() => {
    const on = (id) => !document.getElementById(id).disabled;
    return { join: on("join"), leave: on("leave"), send: on("send"),
      message: on("message"),
      joinLabel: document.getElementById("join").textContent };
  });
}

async function joinAs(tab, name, room) {
  await tab.fill("#name", name);
  await tab.fill("#room", room);
  await tab.click("#join");
  return waitFor(tab, `in ${room}`, (seen) =>
    seen.state === "open" && seen.stateText === `In ${room}`);
}

async function say(tab, text, how = "enter") {
  await tab.fill("#message", text);
  if (how === "enter") await tab.press("#message", "Enter");
  else await tab.click("#send");
}

// ---------------------------------------------------------------- tests

test("the page loads from moonsocket, ready to join",
  OPTIONS, async () => {
    const tab = await openPage();
    people.alice = tab;
    assert.equal(await tab.title(), "moonsocket chat");
    const response = await tab.request.get(`${session.origin}/`);
    assert.match(response.headers()["content-type"] ?? "", /^text\/html/);
    assert.deepEqual(await view(tab), { state: "ready",
      stateText: "Not connected", title: "Not in a room", count: "",
      members: [], log: [], recovered: [] });
    assert.deepEqual(await buttons(tab), { join: true, leave: false,
      send: false, message: false, joinLabel: "Join" });
    assert.equal(await tab.inputValue("#room"), "lobby");
  });

test("a blank name is caught on the page, a bad one by the server",
  OPTIONS, async () => {
    const tab = people.alice;
    await tab.fill("#name", "   ");
    await tab.click("#join");
    await waitForLog(tab, "error: Pick a name and a room first");
    assert.equal((await view(tab)).state, "ready");
    await tab.fill("#name", "evil\u202etxt.exe");
    await tab.click("#join");
    const seen = await waitForLog(tab,
      "error: name must not contain control characters");
    assert.deepEqual([seen.state, seen.stateText, seen.title],
      ["open", "Connected", "Not in a room"]);
    assert.deepEqual(await buttons(tab), { join: true, leave: true,
      send: false, message: false, joinLabel: "Join" });
  });

test("two people join the same room and see each other come",
  OPTIONS, async () => {
    const alice = people.alice;
    const seen = await joinAs(alice, "alice", "lobby");
    assert.deepEqual(seen, { state: "open", stateText: "In lobby",
      title: "Room: lobby", count: "1 person here", members: ["*alice"],
      log: ["notice: You joined lobby as alice"], recovered: [] });
    assert.deepEqual(await buttons(alice), { join: true, leave: true,
      send: true, message: true, joinLabel: "Switch room" });

    const bob = people.bob = await openPage();
    assert.deepEqual((await joinAs(bob, "bob", "lobby")).members,
      ["alice", "*bob"]);
    assert.equal((await view(bob)).count, "2 people here");
    const after = await waitForLog(alice, "notice: bob joined");
    assert.equal(after.count, "2 people here");
    assert.deepEqual(after.members, ["*alice", "bob"]);
  });

test("what one writes, the other reads, as text",
  OPTIONS, async () => {
    const { alice, bob } = people;
    const attack = '<img src="x" onerror="window.__xss = 1"><b>hi</b> 🌙';
    await say(alice, attack);
    await waitForLog(bob, `message: alice: ${attack}`);
    await waitForLog(alice, `message*: alice: ${attack}`);
    assert.equal(await alice.inputValue("#message"), "");
    await say(bob, "hello alice", "click");
    await waitForLog(alice, "message: bob: hello alice");
    await waitForLog(bob, "message*: bob: hello alice");
    for (const tab of [alice, bob]) {
      assert.equal(await tab.locator("#log img, #log b").count(), 0);
      assert.equal(await tab.evaluate(() => window.__xss), undefined);
    }
    assert.deepEqual((await view(bob)).log, [
      "notice: You joined lobby as bob",
      `message: alice: ${attack}`,
      "message*: bob: hello alice",
    ]);
  });

test("someone in another room sees none of it",
  OPTIONS, async () => {
    const { alice, bob } = people;
    const carol = people.carol = await openPage();
    await joinAs(carol, "carol", "kitchen");
    await say(carol, "anyone in the kitchen?");
    await waitForLog(carol, "message*: carol: anyone in the kitchen?");
    // carol's message went out before this one: whoever would get it
    // has it by the time bob sees this
    await say(alice, "only for the lobby");
    await waitForLog(bob, "message: alice: only for the lobby");
    await waitForLog(alice, "message*: alice: only for the lobby");
    const kitchen = await view(carol);
    assert.deepEqual(kitchen.log, ["notice: You joined kitchen as carol",
      "message*: carol: anyone in the kitchen?"]);
    assert.deepEqual([kitchen.count, kitchen.members],
      ["1 person here", ["*carol"]]);
    for (const tab of [alice, bob]) {
      const { log, count } = await view(tab);
      assert.equal(count, "2 people here");
      assert.ok(!log.some((line) => line.includes("carol")),
        log.join("\n"));
    }
  });

test("switching rooms says who left and who joined",
  OPTIONS, async () => {
    const { alice, bob, carol } = people;
    const joined = await joinAs(carol, "carol", "lobby");
    assert.deepEqual([joined.log, joined.count, joined.members], [
      ["notice: You joined lobby as carol"], "3 people here",
      ["alice", "bob", "*carol"]]);
    for (const tab of [alice, bob]) {
      const seen = await waitForLog(tab, "notice: carol joined");
      assert.equal(seen.count, "3 people here");
    }
    await joinAs(carol, "carol", "kitchen");
    for (const tab of [alice, bob]) {
      const seen = await waitForLog(tab, "notice: carol left");
      assert.equal(seen.count, "2 people here");
      assert.ok(!seen.members.includes("carol"), seen.members.join());
    }
    // a name already in the room gets a number
    const other = await openPage();
    const twin = await joinAs(other, "alice", "lobby");
    assert.equal(twin.log[0], "notice: You joined lobby as alice (2)");
    await waitForLog(alice, "notice: alice (2) joined");
    await other.context().close();
    await waitForLog(alice, "notice: alice (2) left");
  });

test("closing a page tells the room it left",
  OPTIONS, async () => {
    const { alice, bob, carol } = people;
    await bob.context().close();
    delete people.bob;
    const seen = await waitForLog(alice, "notice: bob left");
    assert.equal(seen.count, "1 person here");
    assert.deepEqual(seen.members, ["*alice"]);
    assert.ok(!(await view(carol)).log.some((line) => line.includes("bob")));
    await alice.screenshot({ path: path.join(SHOTS, "chat.png"),
      fullPage: true });
  });

test("Leave closes the socket with 1000; Join comes back",
  OPTIONS, async () => {
    const { alice, carol } = people;
    await alice.click("#leave");
    const left = await waitFor(alice, "closed", (seen) =>
      seen.state === "closed");
    assert.match(left.stateText, /^Closed \(code 1000(: Leaving)?\)$/);
    assert.match(left.log.at(-1), /^notice: You left lobby \(code 1000/);
    assert.deepEqual([left.title, left.count, left.members],
      ["Not in a room", "", []]);
    assert.deepEqual(await buttons(alice), { join: true, leave: false,
      send: false, message: false, joinLabel: "Join" });
    await joinAs(alice, "alice", "kitchen");
    await waitForLog(carol, "notice: alice joined");
    await say(carol, "welcome back");
    await waitForLog(alice, "message: carol: welcome back");
  });

test("a dropped page comes back and shows what it missed, once, in order",
  OPTIONS, async () => {
    const dan = await openPage();
    const eve = await openPage();
    await joinAs(dan, "dan", "hall");
    await joinAs(eve, "eve", "hall");
    await waitForLog(dan, "notice: eve joined");
    await say(eve, "before");
    await waitForLog(dan, "message: eve: before");
    // "Disconnect network": the server cuts dan's socket off, and sees
    // a lost connection (eve is told dan left).  Then dan's browser goes
    // offline (Chromium's network emulation) while its back-off runs, so
    // that it stays away until the test lets it back; a try that came
    // before the test could stop it is simply dropped again.
    for (let attempt = 1; ; attempt++) {
      await dan.click("#drop");
      await waitFor(dan, "the lost connection", (seen) =>
        seen.stateText.startsWith("Reconnecting in"));
      await dan.context().setOffline(true);
      const seen = await waitFor(dan, "offline or back", (seen) =>
        seen.stateText === "Offline: waiting for the network…" ||
        seen.state === "open");
      if (seen.state !== "open") break;
      assert.ok(attempt < 3, "dan always came back before going offline");
      await dan.context().setOffline(false);
      await waitFor(dan, "back in hall", (seen) =>
        seen.stateText === "In hall");
    }
    await waitForLog(eve, "notice: dan left");
    const missed = ["missed 1", "missed 2", "missed 3"];
    for (const text of missed) {
      await say(eve, text);
      await waitForLog(eve, `message*: eve: ${text}`);
    }
    // back online: dan comes back at once, while eve goes on writing
    await dan.context().setOffline(false);
    const during = ["during 1", "during 2", "during 3"];
    for (const text of during) await say(eve, text);
    await waitFor(dan, "back in hall", (seen) =>
      seen.stateText === "In hall");
    await waitForLog(eve, "notice: dan joined");
    await say(eve, "after");
    const seen = await waitForLog(dan, "message: eve: after");
    // every message of eve's once, in order; what dan missed marked so
    const said = seen.log.filter((line) => line.startsWith("message"));
    assert.deepEqual(said, ["before", ...missed, ...during, "after"].map(
      (text) => `message: eve: ${text}`));
    for (const text of missed) {
      assert.ok(seen.recovered.includes(`message: eve: ${text}`),
        seen.recovered.join("\n"));
    }
    assert.ok(!seen.recovered.includes("message: eve: after"));
    assert.ok(seen.recovered.includes("notice: dan left"),
      seen.recovered.join("\n"));
    const back = seen.log.filter((line) => line.startsWith("notice: Back"));
    assert.equal(back.length, 1, seen.log.join("\n"));
    const recovered = /^notice: Back in hall: (\d+) missed messages? recov/;
    const count = Number(recovered.exec(back[0])?.[1]);
    assert.ok(count >= missed.length && count <= missed.length +
      during.length, back[0]);
    assert.deepEqual(seen.log.filter((line) => line.startsWith("error")),
      ["error: Connection lost (code 1006)"]);
    assert.deepEqual([seen.members, seen.count], [["*dan", "eve"],
      "2 people here"]);
    await dan.screenshot({ path: path.join(SHOTS, "chat-recovered.png"),
      fullPage: true });
    await dan.context().close();
    await eve.context().close();
  });

test("on a phone-sized screen, in the dark scheme",
  OPTIONS, async () => {
    for (const [scheme, file] of [["light", "chat-phone.png"],
      ["dark", "chat-dark.png"]]) {
      const phone = await openPage({ viewport: { width: 390, height: 844 },
        isMobile: true, hasTouch: true, deviceScaleFactor: 2,
        colorScheme: scheme });
      await joinAs(phone, `a rather long name, ${scheme}`, "kitchen");
      await say(phone, "Hello from a phone");
      await say(phone, "x".repeat(300));
      await say(people.carol, `hello ${scheme} phone`);
      await waitForLog(phone, `message: carol: hello ${scheme} phone`);
      // Nothing wider than the screen: no sideways scrolling.
      const overflow = await phone.evaluate(() =>
        document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
      await phone.screenshot({ path: path.join(SHOTS, file),
        fullPage: true });
      await phone.context().close();
    }
  });

sampleSessionEnds(session, OPTIONS);
