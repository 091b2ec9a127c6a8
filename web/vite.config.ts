/// <reference types="vitest/config" />
import { gzipSync } from "node:zlib";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";

/** Writes `file.gz` beside every compressible output file the gateway serves. */
function precompress(): Plugin {
  let outDir = "dist";
  return {
    name: "promptops-precompress",
    apply: "build",
    configResolved(config) {
      outDir = config.build.outDir;
    },
    writeBundle(_options, bundle) {
      for (const name of [...Object.keys(bundle), "index.html"]) {
        if (!/\.(js|mjs|css|html|json|svg|ttf|map|txt)$/.test(name)) continue;
        const path = join(outDir, name);
        const raw = readFileSync(path);
        const gz = gzipSync(raw, { level: 9 });
        if (gz.length < raw.length * 0.9) writeFileSync(`${path}.gz`, gz);
      }
    },
  };
}

const gateway = process.env.PROMPTOPS_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react(), precompress()],
  build: {
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 4096,
    reportCompressedSize: false,
  },
  server: {
    proxy: {
      "/api": gateway,
      "/v1": gateway,
      "/openapi.json": gateway,
    },
  },
  test: {
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
    environment: "node",
  },
});
