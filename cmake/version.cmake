# Writes OUT (a C header) with the git commit of SRC, at build time, so that
# `qlora-train --version` names the commit the binary was built from. The file
# is rewritten only when its contents change (no needless relinks).
#   cmake -DSRC=<source dir> -DOUT=<header> -P version.cmake
set(commit "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SRC} rev-parse --short=12 HEAD
                  OUTPUT_VARIABLE c RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(rc EQUAL 0 AND c)
    set(commit ${c})
    execute_process(COMMAND ${GIT_EXECUTABLE} -C ${SRC} status --porcelain --untracked-files=no
                    OUTPUT_VARIABLE dirty RESULT_VARIABLE rc2 ERROR_QUIET)
    if(rc2 EQUAL 0 AND dirty)
      set(commit "${commit}-dirty")
    endif()
  endif()
endif()
set(text "#define QLORA_GIT_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
else()
  set(old "")
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
