/* placeholder: being written */
typedef int popkit_placeholder_encoder;
