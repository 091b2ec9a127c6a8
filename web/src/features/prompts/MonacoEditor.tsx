/** A Monaco editor for one template text, with the API's problems as markers. */
import { useEffect, useRef } from "react";
import { LANGUAGE, monaco } from "./monaco";
import type { SourcePosition } from "../../api/problem";

export interface EditorProps {
  value: string;
  onChange: (value: string) => void;
  /** The accessible name of the text area. */
  label: string;
  problems?: SourcePosition[];
  /** Lines shown before the editor scrolls (it grows with its content up to this). */
  maxLines?: number;
  minLines?: number;
  placeholder?: string;
  /** Moves the cursor here when it changes (a click on a listed problem). */
  reveal?: { line: number; column: number; at: number } | null;
}

export default function MonacoEditor(props: EditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const editor = useRef<monaco.editor.IStandaloneCodeEditor | null>(null);
  const onChange = useRef(props.onChange);
  onChange.current = props.onChange;
  const minLines = props.minLines ?? 6;
  const maxLines = props.maxLines ?? 30;

  useEffect(() => {
    if (!host.current) return;
    const instance = monaco.editor.create(host.current, {
      value: props.value,
      language: LANGUAGE,
      theme: "promptops",
      minimap: { enabled: false },
      wordWrap: "on",
      lineNumbersMinChars: 3,
      scrollBeyondLastLine: false,
      automaticLayout: true,
      fontSize: 13,
      renderLineHighlight: "none",
      overviewRulerLanes: 0,
      ariaLabel: props.label,
      placeholder: props.placeholder,
      padding: { top: 8, bottom: 8 },
      scrollbar: { alwaysConsumeMouseWheel: false },
    });
    editor.current = instance;
    const lineHeight = instance.getOption(monaco.editor.EditorOption.lineHeight);
    const fit = () => {
      const lines = Math.min(maxLines, Math.max(minLines, instance.getModel()?.getLineCount() ?? 1));
      if (host.current) host.current.style.height = `${lines * lineHeight + 16}px`;
      instance.layout();
    };
    fit();
    const changes = instance.onDidChangeModelContent(() => {
      onChange.current(instance.getValue());
      fit();
    });
    return () => {
      changes.dispose();
      instance.getModel()?.dispose();
      instance.dispose();
      editor.current = null;
    };
    // The editor is created once; `value` changes from outside are applied below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useEffect(() => {
    const instance = editor.current;
    if (instance && instance.getValue() !== props.value) instance.setValue(props.value);
  }, [props.value]);

  useEffect(() => {
    const model = editor.current?.getModel();
    if (!model) return;
    monaco.editor.setModelMarkers(
      model,
      "promptops",
      (props.problems ?? []).map((p) => ({
        severity: monaco.MarkerSeverity.Error,
        message: p.message,
        startLineNumber: p.line,
        startColumn: p.column,
        endLineNumber: p.line,
        endColumn: Math.max(p.column + 2, model.getLineMaxColumn(Math.min(p.line, model.getLineCount()))),
      })),
    );
  }, [props.problems]);

  useEffect(() => {
    const instance = editor.current;
    if (!instance || !props.reveal) return;
    instance.setPosition({ lineNumber: props.reveal.line, column: props.reveal.column });
    instance.revealLineInCenter(props.reveal.line);
    instance.focus();
  }, [props.reveal]);

  return <div ref={host} className="monaco-host" data-testid="monaco" />;
}
