import { defineConfig } from "@playwright/test";

/**
 * Browser tests against the real `promptops` binary on the embedded default
 * (started by `e2e/global-setup.ts` on free ports with a fresh data dir),
 * driven in Debian's Chromium — Playwright never downloads a browser here.
 */
export default defineConfig({
  testDir: "e2e",
  globalSetup: "./e2e/global-setup.ts",
  globalTeardown: "./e2e/global-teardown.ts",
  fullyParallel: false,
  workers: 1,
  // One retry in CI, reported as "flaky" when it was needed: a shared 2-core machine is noisy.
  retries: process.env.CI ? 1 : 0,
  timeout: 180_000,
  expect: { timeout: 15_000 },
  reporter: [["list"]],
  outputDir: "test-results",
  use: {
    baseURL: process.env.PROMPTOPS_CONSOLE_URL,
    trace: "off",
    screenshot: "only-on-failure",
    viewport: { width: 1280, height: 800 },
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
});
