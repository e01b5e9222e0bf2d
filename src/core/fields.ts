/** Reading record fields by path, shared by every step that names fields in its config. */
import type { Rec } from './types.ts';

/** A reader for `path`; dots reach into nested objects (`user.id`), missing parts give undefined. */
export function fieldReader(path: string): (r: Rec) => unknown {
  if (!path.includes('.')) return (r) => r[path];
  const parts = path.split('.');
  return (r) => {
    let v: unknown = r;
    for (const p of parts) {
      if (v === null || typeof v !== 'object') return undefined;
      v = (v as Rec)[p];
    }
    return v;
  };
}
