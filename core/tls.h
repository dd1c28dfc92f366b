#ifndef POPKIT_CORE_TLS_H
#define POPKIT_CORE_TLS_H
#endif
