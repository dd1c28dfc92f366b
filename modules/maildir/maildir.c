typedef int popkit_placeholder;
