/** A failure in plain words, announced to screen readers; nothing when there is none. */
export function ErrorNotice({ error }: { error: string | null | undefined }) {
  return error ? (
    <p className="notice bad" role="alert">
      {error}
    </p>
  ) : null;
}
