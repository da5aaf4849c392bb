// The console in a real browser: Debian's Chromium driven by playwright-core.
// Run by ingest/tests/console_browser.rs, which starts Kafka, the service and an agent,
// makes the fault and passes what it made in the environment:
//   BASE_URL, ADMIN_KEY, READ_KEY, CLUSTER (the faulty one), ALERT (its alert's name),
//   XSS_CLUSTER (whose topic and group are named like markup), OTHER_CLUSTER (another
//   tenant's), SCREENSHOTS (a dir for the README's pictures), CHROMIUM (the binary).
// Exits non-zero with the first failed check.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("BASE_URL");
const SHOTS = env("SCREENSHOTS");
const CLUSTER = env("CLUSTER");
const ALERT = env("ALERT");
mkdirSync(SHOTS, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const errors = [];
// Documents this script asks for on purpose with an error status (404, 403, 401), which
// Chromium logs as failed loads: those are the expected answers, not errors.
const refusals = new Set();
function expectRefusal(url) { refusals.add(url); }
async function newPage() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (m.text().startsWith("Failed to load resource") && refusals.has(m.location().url)) return;
    errors.push(`${page.url()}: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  page.on("dialog", (d) => { errors.push(`${page.url()}: a dialog opened: ${d.message()}`); d.dismiss(); });
  return { context, page };
}

async function signIn(page, key, next) {
  await page.goto(`${BASE}/sign-in${next ? `?next=${encodeURIComponent(next)}` : ""}`);
  await page.fill("input[name=key]", key);
  await Promise.all([page.waitForNavigation(), page.click("#sign-in")]);
}

try {
  // Without a session every page goes to sign-in, and comes back after it.
  {
    const { context, page } = await newPage();
    await page.goto(`${BASE}/alerts`);
    check(new URL(page.url()).pathname === "/sign-in", "a page asked for without a session goes to sign-in");
    await page.fill("input[name=key]", "fsk_not_a_key");
    expectRefusal(`${BASE}/sign-in`);
    await Promise.all([page.waitForNavigation(), page.click("#sign-in")]);
    check((await page.textContent(".error")).includes("unknown"), "a wrong key is refused with a reason");
    await page.screenshot({ path: `${SHOTS}/sign-in.png` });
    await context.close();
  }

  const { context, page } = await newPage();
  await signIn(page, env("ADMIN_KEY"), "/");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "foresight_session");
  check(session && session.httpOnly && session.secure && session.sameSite === "Strict" && session.expires > Date.now() / 1000,
    "the session cookie is HttpOnly, Secure, SameSite=Strict and expires");

  // The fleet shows the cluster with the fault.
  const row = page.locator("#fleet tbody tr", { has: page.locator(`a.cluster-link:text-is("${CLUSTER}")`) });
  await row.waitFor();
  check((await row.locator(".badge").first().textContent()) === "critical", `the fleet shows ${CLUSTER} as critical`);
  check(Number(await row.locator("td").nth(4).textContent()) > 0, `the fleet shows ${CLUSTER}'s offline partitions`);
  await page.fill("input[name=q]", "no-such-cluster");
  check(!(await row.isVisible()), "the fleet filter hides clusters that do not match");
  await page.fill("input[name=q]", "");
  await page.screenshot({ path: `${SHOTS}/fleet.png` });

  // The cluster page: its alert, its context, and plots with data.
  await Promise.all([page.waitForNavigation(), row.locator("a.cluster-link").click()]);
  await page.locator(`article.alert[data-alertname="${ALERT}"]`).waitFor();
  check(await page.locator(`article.alert[data-alertname="${ALERT}"] a:text-is("Runbook")`).count() === 1, "the open alert has its runbook link");
  check(await page.locator("#brokers tbody tr").count() >= 2, "the cluster page lists the brokers");
  await page.waitForFunction(() => {
    const el = document.getElementById("chart-partitions");
    return el && el.dataset.points !== undefined;
  }, null, { timeout: 30000 });
  const points = Number(await page.getAttribute("#chart-partitions", "data-points"));
  check(points > 0, `the partitions plot has data points (${points})`);
  await page.waitForFunction(() => document.getElementById("chart-lag")?.dataset.points !== undefined, null, { timeout: 30000 });
  const lagPoints = Number(await page.getAttribute("#chart-lag", "data-points"));
  check(lagPoints > 0, `the lag plot has data points (${lagPoints})`);
  const painted = await page.evaluate(() => {
    const c = document.querySelector("#chart-partitions canvas");
    if (!c || c.width === 0) return 0;
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  check(painted > 100, `the partitions plot's canvas is painted (${painted} pixels)`);
  await page.selectOption("#range", "900");
  await page.waitForFunction(() => document.querySelector("#chart-partitions canvas"));
  await page.screenshot({ path: `${SHOTS}/cluster.png`, fullPage: true });

  // Another tenant's cluster is not found.
  const otherUrl = `${BASE}/clusters/${encodeURIComponent(env("OTHER_CLUSTER"))}`;
  expectRefusal(otherUrl);
  const other = await page.goto(otherUrl);
  check(other.status() === 404, "another tenant's cluster page answers 404");

  // Names that look like markup are text.
  const xss = await page.goto(`${BASE}/clusters/${encodeURIComponent(env("XSS_CLUSTER"))}`);
  check(xss.status() === 200, "the cluster with markup-like names renders");
  check(await page.locator("img").count() === 0, "a topic or group named <img …> makes no image");
  check((await page.locator("#topics td.name").allTextContents()).includes("<img src=x onerror=alert(1)>"), "the topic's name shows as text");
  check((await page.locator("#groups td.name").allTextContents()).includes("<img src=x onerror=alert(1)>"), "the group's name shows as text");

  // Silence the alert from the alerts page, see it silenced, expire it.
  await page.goto(`${BASE}/alerts`);
  const card = page.locator(`article.alert[data-alertname="${ALERT}"]`).first();
  await card.waitFor();
  await page.screenshot({ path: `${SHOTS}/alerts.png`, fullPage: true });
  await Promise.all([page.waitForNavigation(), card.locator("a.silence-link").click()]);
  const matchers = await page.inputValue("textarea[name=matchers]");
  check(matchers.includes(`alertname="${ALERT}"`) && matchers.includes(`cluster="${CLUSTER}"`), "the silence form is filled with the alert's matchers");
  check(await page.locator("ul.preview li").count() >= 1, "the silence form previews the alert it mutes");
  await page.fill("input[name=comment]", "browser test: broker down on purpose");
  await page.screenshot({ path: `${SHOTS}/silence.png` });
  await Promise.all([page.waitForNavigation(), page.click("#create-silence")]);
  check(new URL(page.url()).pathname === "/silences", "creating the silence goes to the silences");
  check(await page.locator("tr.silence-active").count() === 1, "the silence is active");
  await page.goto(`${BASE}/alerts`);
  const silencedCard = page.locator(`article.alert[data-alertname="${ALERT}"]`).first();
  check((await silencedCard.locator(".badge.state").textContent()) === "silenced", "the alert shows as silenced");
  await page.goto(`${BASE}/silences`);
  await Promise.all([page.waitForNavigation(), page.click("tr.silence-active button.expire")]);
  check(await page.locator("tr.silence-active").count() === 0 && await page.locator("tr.silence-expired").count() === 1, "expiring ends the silence");

  // The other pages render.
  for (const path of ["/notifications", "/rules"]) {
    const r = await page.goto(`${BASE}${path}`);
    check(r.status() === 200, `${path} renders`);
  }
  check(await page.locator("tr.rule").count() > 10, "the rules page lists the pack's rules");
  await page.screenshot({ path: `${SHOTS}/rules.png` });

  // A CSRF-less change is refused even with the session.
  const forged = await page.request.post(`${BASE}/silences/expire`, { form: { id: "x" }, maxRedirects: 0 });
  check(forged.status() === 403, "a change without the session's CSRF token is refused");

  // Sign out: the session is gone.
  await Promise.all([page.waitForNavigation(), page.click("#sign-out")]);
  check(new URL(page.url()).pathname === "/sign-in", "signing out goes to sign-in");
  await page.goto(`${BASE}/`);
  check(new URL(page.url()).pathname === "/sign-in", "after sign-out the fleet needs a sign-in again");
  await context.close();

  // A read key sees and cannot change.
  {
    const { context, page } = await newPage();
    await signIn(page, env("READ_KEY"), "/alerts");
    check(new URL(page.url()).pathname === "/alerts", "a read key signs in");
    check(await page.locator("a.silence-link").count() === 0, "a read key is offered no silence button");
    expectRefusal(`${BASE}/silences/new`);
    const form = await page.goto(`${BASE}/silences/new`);
    check(form.status() === 403, "a read key cannot open the silence form");
    const csrf = await page.evaluate(async () => {
      const r = await fetch("/alerts");
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      return doc.querySelector("input[name=csrf]").value;
    });
    const post = await page.request.post(`${BASE}/silences`, {
      form: { csrf, matchers: `alertname="${ALERT}"`, duration: "1h", created_by: "reader", comment: "should fail" },
      maxRedirects: 0,
    });
    check(post.status() === 403, "a read key cannot create a silence");
    await context.close();
  }

  check(errors.length === 0, `no console errors on any page${errors.length ? ": " + errors.join("; ") : ""}`);
} catch (e) {
  console.error(e.message);
  if (errors.length) console.error("console errors:", errors.join("\n"));
  await browser.close();
  process.exit(1);
}
await browser.close();
