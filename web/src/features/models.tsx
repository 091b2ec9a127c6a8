/** The org's model catalog, shared by the editor, playground and chat. */
import { useQuery } from "@tanstack/react-query";
import { api, unwrap } from "../api/client";

export function useModels() {
  return useQuery({
    queryKey: ["models"],
    queryFn: () => unwrap(api.GET("/api/v1/models")),
    staleTime: 60_000,
    select: (data) => data.models.filter((m) => !m.embeddings),
  });
}

/**
 * The `<option>`s of a model picker: the catalog's chat models, and the
 * current value first when the catalog no longer has it (so it stays visible).
 */
export function ModelOptions({ current }: { current?: string }) {
  const models = useModels();
  const known = !current || models.data?.some((m) => m.id === current);
  return (
    <>
      {!known && <option value={current}>{current} (not in the catalog)</option>}
      {models.data?.map((m) => (
        <option key={m.id} value={m.id}>
          {m.id}
        </option>
      ))}
    </>
  );
}
