/** At 390 px wide (a phone) every page of the console fits and stays usable. */
import { expect, test } from "@playwright/test";
import { expectAccessible, PASSWORD, screenshot, signIn, uniqueEmail } from "./helpers";

test.use({ viewport: { width: 390, height: 844 } });

test("pages fit a 390 px screen without sideways scrolling", async ({ page, request }) => {
  const email = uniqueEmail("narrow");
  const signup = await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD } });
  const { access_token } = (await signup.json()) as { access_token: string };
  const created = await request.post("/api/v1/prompts", {
    headers: { Authorization: `Bearer ${access_token}` },
    data: { name: "triage", folder: "support", template: "Classify {{ ticket }}", model: { model: "mock/echo" } },
  });
  const { prompt } = (await created.json()) as { prompt: { id: string } };
  await signIn(page, email);
  for (const [path, name] of [
    ["/prompts", "prompts-390"],
    [`/prompts/${prompt.id}`, "editor-390"],
    ["/playground", "playground-390"],
    ["/chat", "chat-390"],
  ] as const) {
    await page.goto(path);
    await expect(page.getByRole("navigation", { name: "Main" })).toBeVisible();
    await page.waitForLoadState("networkidle");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, `${path} scrolls sideways by ${overflow} px`).toBeLessThanOrEqual(0);
    await expectAccessible(page, `${path} at 390 px`);
    await screenshot(page, name);
  }
  // The playground works there too.
  await page.goto("/playground");
  await page.getByLabel("Message").fill("hello from a phone");
  await page.getByRole("button", { name: "Run" }).click();
  await expect(page.getByRole("region", { name: "Output", exact: true })).toContainText("hello from a phone");
});

test("chat keeps a thread and switches the model mid-thread", async ({ page, request }) => {
  const email = uniqueEmail("chat");
  await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD } });
  await signIn(page, email);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chat" }).click();
  await page.getByLabel("Model").selectOption("mock/echo");
  await page.getByLabel("Message").fill("first question");
  await page.getByRole("button", { name: "Send" }).click();
  const thread = page.getByRole("region", { name: "Conversation" });
  await expect(thread).toContainText("answered by mock/echo");
  await page.getByLabel("Model").selectOption("mock/lorem");
  await page.getByLabel("Message").fill("second question");
  await page.getByRole("button", { name: "Send" }).click();
  await expect(thread.getByText("answered by mock/lorem")).toBeVisible();
  await expect(thread.getByText("answered by mock/echo")).toBeVisible();
  await expectAccessible(page, "chat");
  await screenshot(page, "chat-390");
});
