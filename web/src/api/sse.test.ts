import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("parses events cut at any point", () => {
    const stream = 'event: started\ndata: {"id":"r1"}\n\nevent: delta\ndata: {"text":"Hel"}\n\n: keep-alive\n\nevent: delta\r\ndata: {"text":"lo"}\r\n\r\n';
    for (let cut = 0; cut < stream.length; cut++) {
      const parser = new SseParser();
      const events = [...parser.push(stream.slice(0, cut)), ...parser.push(stream.slice(cut))];
      expect(events).toEqual([
        { event: "started", data: '{"id":"r1"}' },
        { event: "delta", data: '{"text":"Hel"}' },
        { event: "delta", data: '{"text":"lo"}' },
      ]);
    }
  });

  it("joins multi-line data and defaults the event name", () => {
    expect(new SseParser().push("data: a\ndata: b\n\n")).toEqual([{ event: "message", data: "a\nb" }]);
  });

  it("holds an event until its blank line arrives", () => {
    const parser = new SseParser();
    expect(parser.push("event: completed\ndata: {}\n")).toEqual([]);
    expect(parser.push("\n")).toEqual([{ event: "completed", data: "{}" }]);
  });
});
