# `cmake --install`: libkpalloc.a (and libkpalloc_kernel.a and
# libkpalloc_kernel_i386.a when the targets kpalloc::kpalloc_kernel and
# kpalloc::kpalloc_kernel_i386 exist), the headers, kpalloc::pintos, a CMake
# package (find_package(kpalloc) gives kpalloc::kpalloc, kpalloc::pintos,
# kpalloc::kpalloc_kernel and kpalloc::kpalloc_kernel_i386 when installed)
# and kpalloc.pc for pkg-config.
# Included from the top-level CMakeLists.txt; the ctest
# consumer_find_package checks an installed tree with examples/consumer.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KPALLOC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kpalloc)

# kpalloc::kpalloc is an IMPORTED target (cargo builds it): install its file.
install(FILES ${KPALLOC_HOST_LIB} DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/kpalloc.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

if(TARGET kpalloc_pintos)
  install(FILES ${PROJECT_SOURCE_DIR}/include/kpalloc_pintos.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(TARGETS kpalloc_pintos EXPORT kpallocTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT kpallocTargets NAMESPACE kpalloc:: DESTINATION ${KPALLOC_CMAKE_DIR})
endif()

# The freestanding libraries this build defines (x86-64, i386). Deferred to
# the end of the top-level directory so that the targets may be defined
# after this file is included.
function(kpalloc_install_kernel_libraries)
  foreach(name kpalloc_kernel kpalloc_kernel_i386)
    if(TARGET kpalloc::${name})
      # A STATIC library, IMPORTED (cargo-built) or an ALIAS of a real target.
      install(FILES $<TARGET_FILE:kpalloc::${name}>
        DESTINATION ${CMAKE_INSTALL_LIBDIR} RENAME lib${name}.a)
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL kpalloc_install_kernel_libraries)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/kpallocConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kpallocConfig.cmake
  INSTALL_DESTINATION ${KPALLOC_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_INCLUDEDIR)
# 0.x: a new minor version may break the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kpallocConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kpallocConfig.cmake ${PROJECT_BINARY_DIR}/kpallocConfigVersion.cmake
  DESTINATION ${KPALLOC_CMAKE_DIR})

# kpalloc.pc, relocatable: its prefix is found from where it is installed.
file(RELATIVE_PATH KPALLOC_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" KPALLOC_PC_TO_PREFIX "${KPALLOC_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/kpalloc.pc.in ${PROJECT_BINARY_DIR}/kpalloc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kpalloc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

if(BUILD_TESTING)
  # Installs into a temporary prefix, then builds and runs examples/consumer
  # against it with find_package and with pkg-config.
  find_program(PKG_CONFIG_EXECUTABLE pkg-config)
  add_test(NAME consumer_find_package
    COMMAND ${CMAKE_COMMAND}
      -DBUILD_DIR=${PROJECT_BINARY_DIR}
      -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
      -DWORK_DIR=${PROJECT_BINARY_DIR}/consumer-test
      -DGENERATOR=${CMAKE_GENERATOR}
      -DC_COMPILER=${CMAKE_C_COMPILER}
      -DPKG_CONFIG=${PKG_CONFIG_EXECUTABLE}
      -DEXPECT_PINTOS=$<TARGET_EXISTS:kpalloc_pintos>
      -P ${CMAKE_CURRENT_LIST_DIR}/consumer_test.cmake)
  set_tests_properties(consumer_find_package PROPERTIES
    PASS_REGULAR_EXPRESSION "consumer_find_package: all checks passed")
endif()
