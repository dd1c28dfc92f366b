# popkit_add_module(NAME SOURCES...)
#
# Builds NAME.so into the build tree's modules/ directory and installs it
# beside the other modules. A module sees only include/popkit (the SDK) and
# exports nothing but its descriptor.
function(popkit_add_module name)
  add_library(${name} MODULE ${ARGN})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${name}
    C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY "${POPKIT_BUILD_MODULES_DIR}")
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/include")
  target_link_options(${name} PRIVATE -Wl,-z,defs)
  install(TARGETS ${name} LIBRARY DESTINATION ${POPKIT_MODULES_INSTALL_DIR})
endfunction()
