/**
 * Starts `target/debug/promptops` (or `$PROMPTOPS_BIN`) as a new user would:
 * the embedded default, its own data directory, free ports. Access tokens live
 * 30 s (the shortest allowed), so every test outlives a few of them and the
 * console's refresh is exercised on the way.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const SERVICES = ["gateway", "prompts", "execution", "evaluation", "billing", "audit"];

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => ok(port));
    });
  });
}

export const STATE_FILE = join(tmpdir(), "promptops-console-e2e.json");

export default async function globalSetup() {
  // Against a platform that is already running (development): nothing to start.
  if (process.env.PROMPTOPS_CONSOLE_URL) return;
  const binary = process.env.PROMPTOPS_BIN ?? resolve(import.meta.dirname, "../../target/debug/promptops");
  const dir = mkdtempSync(join(tmpdir(), "promptops-console-"));
  const http = await freePort();
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PROMPTOPS_HTTP_ADDR: `127.0.0.1:${http}`,
    PROMPTOPS_DATA_DIR: join(dir, "data"),
    PROMPTOPS_ACCESS_TOKEN_TTL_SECS: "30",
    PROMPTOPS_SHUTDOWN_GRACE_SECS: "2",
    PROMPTOPS_LOG: "warn",
    // Thousands of imported prompts and quick clicks stay under the limits.
    PROMPTOPS_RATE_LIMIT_PER_KEY: "1000",
    PROMPTOPS_RATE_LIMIT_PER_KEY_BURST: "2000",
    PROMPTOPS_RATE_LIMIT_PER_ORG: "2000",
    PROMPTOPS_RATE_LIMIT_PER_ORG_BURST: "4000",
    PROMPTOPS_MAX_BODY_BYTES: String(8 * 1024 * 1024),
  };
  for (const service of SERVICES) {
    const port = await freePort();
    env[`PROMPTOPS_${service.toUpperCase()}_GRPC_ADDR`] = `127.0.0.1:${port}`;
    env[`PROMPTOPS_${service.toUpperCase()}_URL`] = `http://127.0.0.1:${port}`;
  }
  const log = join(dir, "promptops.log");
  const child = spawn(binary, [], { env, stdio: ["ignore", openSync(log, "a"), openSync(log, "a")], detached: false });
  const url = `http://127.0.0.1:${http}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`promptops exited with ${child.exitCode}:\n${readFileSync(log, "utf8").slice(-4000)}`);
    try {
      const ready = await fetch(`${url}/readyz`);
      if (ready.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`promptops was not ready within 90 s:\n${readFileSync(log, "utf8").slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  process.env.PROMPTOPS_CONSOLE_URL = url;
  writeFileSync(STATE_FILE, JSON.stringify({ pid: child.pid, url, dir, log }));
}
