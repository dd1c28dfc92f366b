/* Being written: popkit-passwd. */
int main(void) { return 1; }
