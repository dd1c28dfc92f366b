/*
 * An ordinary shared library, like one a site might drop into the modules
 * directory by mistake: it exports a function and no popkit descriptor.
 */
__attribute__((visibility("default"))) int foreign_add(int a, int b);

int foreign_add(int a, int b) {
  return a + b;
}
