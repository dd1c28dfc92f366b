/* placeholder: being written */
typedef int popkit_placeholder_pop3_commands;
