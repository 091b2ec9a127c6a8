/**
 * Monaco, bundled (never from a CDN) and loaded only when an editor is shown:
 * the editor API with the contributions a prompt editor needs, one worker, and
 * a `prompt-template` language that highlights `{{ variables }}`.
 */
import * as monaco from "monaco-editor/editor/editor.api.js";
import "monaco-editor/editor/contrib/bracketMatching/browser/bracketMatching.js";
import "monaco-editor/editor/contrib/clipboard/browser/clipboard.js";
import "monaco-editor/editor/contrib/contextmenu/browser/contextmenu.js";
import "monaco-editor/editor/contrib/find/browser/findController.js";
import "monaco-editor/editor/contrib/hover/browser/hoverContribution.js";
import "monaco-editor/editor/contrib/linesOperations/browser/linesOperations.js";
import "monaco-editor/editor/contrib/multicursor/browser/multicursor.js";
import "monaco-editor/editor/contrib/placeholderText/browser/placeholderText.contribution.js";
import "monaco-editor/editor/contrib/wordOperations/browser/wordOperations.js";
// The package exports map every path to a .js file: the stylesheet is imported by its location.
import "../../../node_modules/monaco-editor/esm/vs/base/browser/ui/codicons/codicon/codicon.css";
import EditorWorker from "monaco-editor/editor/editor.worker.js?worker";

declare global {
  interface Window {
    MonacoEnvironment?: { getWorker: (id: string, label: string) => Worker };
  }
}

window.MonacoEnvironment = { getWorker: () => new EditorWorker() };

export const LANGUAGE = "prompt-template";

monaco.languages.register({ id: LANGUAGE });
monaco.languages.setMonarchTokensProvider(LANGUAGE, {
  tokenizer: {
    root: [
      [/\\\{\{/, "escape"],
      [/\{\{\s*[A-Za-z_][\w.-]*\s*\}\}/, "variable"],
      [/\{\{/, "invalid"],
    ],
  },
});
monaco.editor.defineTheme("promptops", {
  base: "vs",
  inherit: true,
  rules: [
    { token: "variable", foreground: "7c3aed", fontStyle: "bold" },
    { token: "escape", foreground: "646a78" },
    { token: "invalid", foreground: "b42318", fontStyle: "underline" },
  ],
  colors: { "editor.background": "#ffffff" },
});

export { monaco };
