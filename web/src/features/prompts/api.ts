/** The prompt registry's queries and mutations, shared by its pages. */
import { useInfiniteQuery, useQuery } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "../../api/client";

export type Prompt = Schemas["PromptJson"];
export type Version = Schemas["VersionJson"];

export interface PromptFilter {
  folder?: string;
  tag?: string;
  q?: string;
}

/** Where this browser's last change to the registry landed in the log. */
export type Position = string | undefined;

export const PAGE_SIZE = 200;

export function usePromptList(filter: PromptFilter, minPosition?: Position) {
  return useInfiniteQuery({
    queryKey: ["prompts", filter, minPosition],
    initialPageParam: "",
    queryFn: ({ pageParam, signal }) =>
      unwrap(
        api.GET("/api/v1/prompts", {
          params: {
            query: {
              page_size: PAGE_SIZE,
              page_token: pageParam || undefined,
              folder: filter.folder,
              recursive: filter.folder !== undefined ? true : undefined,
              tag: filter.tag,
              q: filter.q,
              min_position: minPosition,
            },
          },
          signal,
        }),
      ),
    getNextPageParam: (last) => last.next_page_token || undefined,
  });
}

export function useFolders(minPosition?: Position) {
  return useQuery({
    queryKey: ["prompts", "folders", minPosition],
    queryFn: () => unwrap(api.GET("/api/v1/prompts/folders", { params: { query: { min_position: minPosition } } })),
    placeholderData: (previous) => previous,
  });
}

export function usePrompt(promptId: string) {
  return useQuery({
    queryKey: ["prompt", promptId],
    queryFn: () => unwrap(api.GET("/api/v1/prompts/{prompt_id}", { params: { path: { prompt_id: promptId } } })),
  });
}

export function useVersions(promptId: string, enabled = true) {
  return useInfiniteQuery({
    queryKey: ["prompt", promptId, "versions"],
    initialPageParam: "",
    enabled,
    queryFn: ({ pageParam }) =>
      unwrap(
        api.GET("/api/v1/prompts/{prompt_id}/versions", {
          params: { path: { prompt_id: promptId }, query: { page_size: 100, page_token: pageParam || undefined } },
        }),
      ),
    getNextPageParam: (last) => last.next_page_token || undefined,
  });
}

export function useVersion(promptId: string, version: number | undefined) {
  return useQuery({
    queryKey: ["prompt", promptId, "version", version],
    enabled: Boolean(promptId && version),
    queryFn: () =>
      unwrap(api.GET("/api/v1/prompts/resolve", { params: { query: { prompt_id: promptId, version } } })),
  });
}

export function useLabelPolicy() {
  return useQuery({
    queryKey: ["label-policy"],
    queryFn: () => unwrap(api.GET("/api/v1/prompt-policy", {})),
    staleTime: 60_000,
  });
}

/** `support/billing` → `billing`. */
export function folderName(path: string): string {
  return path.split("/").filter(Boolean).at(-1) ?? "";
}
