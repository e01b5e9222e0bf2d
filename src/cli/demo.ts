export async function demoCommand(): Promise<number> {
  return 0;
}
