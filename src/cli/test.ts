export async function testCommand(): Promise<number> {
  return 0;
}
