// Drives the /viewer/ admin UI in headless Chromium. Run by
// src/tests/viewer.rs against a real server it has filled with data:
//
//   PROGRESSDB_ADMIN_KEY=... PROGRESSDB_BACKEND_KEY=... \
//     node viewer.mjs <base-url> <thread-id> <screenshot.png> <spec-json>
//
// Keys come from the environment so they never show in a process list.
// The spec names the texts to look for (see viewer.rs). Exits non-zero,
// saying what was expected, on the first failed check.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const [baseUrl, threadId, screenshotPath, specJson] = process.argv.slice(2);
const adminKey = process.env.PROGRESSDB_ADMIN_KEY;
const backendKey = process.env.PROGRESSDB_BACKEND_KEY;
if (!baseUrl || !threadId || !screenshotPath || !specJson || !adminKey || !backendKey) {
  console.error(
    "usage: PROGRESSDB_ADMIN_KEY=.. PROGRESSDB_BACKEND_KEY=.. node viewer.mjs <base-url> <thread-id> <screenshot.png> <spec-json>",
  );
  process.exit(2);
}
const spec = JSON.parse(specJson);
const TIMEOUT_MS = 30_000;

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(TIMEOUT_MS);
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  const requestUrls = [];
  page.on("request", (request) => requestUrls.push(request.url()));

  const response = await page.goto(`${baseUrl}/viewer/`);
  check(response.status() === 200, "the viewer page loads");

  await page.fill("#key", adminKey);
  await page.click("#connect");
  await page.waitForSelector("#app:not([hidden])");
  check(await page.locator("#login").isHidden(), "the key form goes away once connected");

  // Search by id prefix, so the test thread is found among others.
  await page.selectOption("#search-mode", "id_prefix");
  await page.fill("#search-text", spec.search_prefix);
  await page.click("#search-button");
  const threadItem = page.locator(`.thread-item[data-thread="${threadId}"]`);
  // The list first shows every thread (loaded on connect); wait for the
  // search's answer to replace it.
  const searched = await page
    .waitForFunction(
      (expected) => document.querySelectorAll(".thread-item").length === expected,
      spec.threads_matching_prefix,
      { timeout: 5_000 },
    )
    .then(() => true, () => false);
  check(searched, `the id prefix search lists exactly ${spec.threads_matching_prefix} thread(s)`);
  await threadItem.waitFor();
  const deletedThread = page.locator(`.thread-item[data-thread="${spec.deleted_thread}"]`);
  check(await deletedThread.evaluate((node) => node.classList.contains("deleted")), "a deleted thread is greyed");

  await threadItem.click();
  await page.waitForSelector("#live-status.on");
  const participants = await page.locator("#participants .participant").allTextContents();
  check(
    JSON.stringify(participants) === JSON.stringify(spec.participants),
    `the participants are ${JSON.stringify(spec.participants)}: got ${JSON.stringify(participants)}`,
  );
  for (const text of spec.visible) {
    const bodies = page.locator("#messages .message .body", { hasText: text });
    check((await bodies.count()) === 1, `message "${text}" is shown`);
  }
  const deleted = page.locator(`#messages .message[data-id="${spec.deleted.id}"]`);
  check(await deleted.evaluate((node) => node.classList.contains("deleted")), "the deleted message is greyed");
  check((await deleted.locator(".body").textContent()) === spec.deleted.text, "the deleted message's text is shown");

  // Markup in a message is text, not HTML.
  const markup = page.locator(`#messages .message[data-id="${spec.markup.id}"] .body`);
  check((await markup.textContent()) === spec.markup.text, "markup in a message is shown as text");
  check((await page.locator("#messages .message .body *").count()) === 0, "no message content became an element");

  // Newest first: the page holds `page_size` messages; "Older" fetches the rest.
  const firstIds = await page.locator("#messages .message").evaluateAll((nodes) => nodes.map((n) => n.dataset.id));
  check(firstIds.length === spec.page_size, `the first page shows ${spec.page_size} messages`);
  check(firstIds[0] === spec.newest_id, "the newest message is first");
  await page.click("#older");
  await page.waitForSelector(`#messages .message[data-id="${spec.oldest_id}"]`);
  check((await page.locator("#messages .message").count()) === spec.total_messages, "Older pages back to the first message");
  check(await page.locator("#older").isHidden(), "Older disappears at the start of the thread");

  // Version history of the edited message.
  const edited = page.locator(`#messages .message[data-id="${spec.edited.id}"]`);
  check((await edited.locator(".body").textContent()) === spec.edited.new, "the edited message shows its new text");
  await edited.locator(".show-versions").click();
  await edited.locator(".versions .version").first().waitFor();
  const versions = await edited.locator(".versions .version-body").allTextContents();
  check(
    versions.length === 2 && versions[0] === spec.edited.old && versions[1] === spec.edited.new,
    `version history is [old, new]: got ${JSON.stringify(versions)}`,
  );

  // A message posted elsewhere appears without a reload.
  await page.evaluate(() => {
    window.notReloaded = true;
  });
  const body = JSON.stringify({ body: { text: spec.live_text } });
  await promisify(execFile)("curl", [
    "-sS",
    "--fail-with-body",
    "-H",
    `Authorization: Bearer ${backendKey}`,
    "-H",
    `X-User-ID: ${spec.author}`,
    "-H",
    "Content-Type: application/json",
    "--data-binary",
    body,
    `${baseUrl}/frontend/v1/threads/${encodeURIComponent(threadId)}/messages`,
  ]);
  const live = page.locator("#messages .message .body", { hasText: spec.live_text });
  await live.waitFor({ timeout: 15_000 });
  const firstBody = await page.locator("#messages .message .body").first().textContent();
  check(firstBody === spec.live_text, "the live message arrives at the top");
  check(await page.evaluate(() => window.notReloaded === true), "the page was not reloaded");

  // The stats panel shows numbers from every shard.
  await page.click("#stats-refresh");
  await page.waitForFunction(
    (expected) => {
      const rows = [...document.querySelectorAll("#stats tbody tr")];
      const messages = rows.reduce((sum, row) => sum + Number(row.cells[1].textContent), 0);
      return rows.length > 0 && messages >= expected;
    },
    spec.total_messages + 1,
  );
  const rows = await page.locator("#stats tbody tr").evaluateAll((nodes) =>
    nodes.map((row) => [...row.cells].slice(1).map((cell) => cell.textContent)),
  );
  check(rows.length === spec.shards, `the stats panel has ${spec.shards} shard rows`);
  check(
    rows.every((cells) => cells.every((text) => /^[0-9]/.test(text))),
    `every stats cell is a number: ${JSON.stringify(rows)}`,
  );

  // The key stays in session storage and out of URLs.
  check(
    (await page.evaluate(() => sessionStorage.getItem("progressdb.adminKey"))) === adminKey &&
      (await page.evaluate(() => localStorage.length)) === 0,
    "the key is in sessionStorage only",
  );
  check(!requestUrls.some((url) => url.includes(adminKey)), "no request URL carries the key");
  check(pageErrors.length === 0, `no script errors: ${JSON.stringify(pageErrors)}`);

  await page.screenshot({ path: screenshotPath, fullPage: true });
  console.log(`screenshot: ${screenshotPath}`);
} catch (err) {
  failed = true;
  console.error(err && err.stack ? err.stack : String(err));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
